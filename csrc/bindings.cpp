// The one native module, sqat_kernels._C: a thin layer from NumPy buffers (CPU) or raw
// device pointers (CUDA) to the torch-free core.  Argument validation with readable
// messages lives in Python (sqat_kernels/quant.py); the checks here only guard memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "cpu/cpu_loops.h"
#include "cpu/parallel.h"
#include "cuda/cuda_ops.h"
#include "sqat/grid.h"

namespace py = pybind11;

namespace {

using F32Array = py::array_t<float, py::array::c_style>;
using U8Array = py::array_t<uint8_t, py::array::c_style>;

sqat::Geometry checked_geometry(int type, int64_t n_per_row) {
    const sqat::Geometry g = sqat::geometry(type);
    if (g.block_size == 0) throw py::value_error("unsupported ggml type id " + std::to_string(type));
    if (n_per_row % g.block_size != 0)
        throw py::value_error("row length " + std::to_string(n_per_row) + " is not a multiple of the block size " +
                              std::to_string(g.block_size));
    return g;
}

const float* checked_imatrix(const std::optional<F32Array>& imatrix, int64_t n_per_row) {
    if (!imatrix) return nullptr;
    if (imatrix->ndim() != 1 || imatrix->shape(0) != n_per_row)
        throw py::value_error("imatrix must be a 1-D array of length " + std::to_string(n_per_row));
    return imatrix->data();
}

void require_2d(const py::array& a, const char* what) {
    if (a.ndim() != 2) throw py::value_error(std::string(what) + " must be 2-D");
}

// `out`, when given, must be exactly the array the packed rows go to: uint8, C-contiguous, writeable,
// [nrows, row_bytes].  It is never converted (a converted copy would silently receive the bytes).
U8Array checked_output(const std::optional<py::array>& out, int64_t nrows, int64_t row_bytes) {
    if (!out) return U8Array({nrows, row_bytes});
    const py::array& o = *out;
    if (!o.dtype().is(py::dtype::of<uint8_t>())) throw py::type_error("out must be a uint8 array");
    if (!(o.flags() & py::array::c_style) || !o.writeable())
        throw py::value_error("out must be C-contiguous and writeable");
    if (o.ndim() != 2 || o.shape(0) != nrows || o.shape(1) != row_bytes)
        throw py::value_error("out must have shape [" + std::to_string(nrows) + ", " + std::to_string(row_bytes) + "]");
    return py::reinterpret_borrow<U8Array>(o);
}

U8Array quantize(const F32Array& x, int type, const std::optional<F32Array>& imatrix, int threads,
                 const std::optional<py::array>& out_arg) {
    require_2d(x, "x");
    const int64_t nrows = x.shape(0), n = x.shape(1);
    const sqat::Geometry g = checked_geometry(type, n);
    const float* qw = checked_imatrix(imatrix, n);
    U8Array out = checked_output(out_arg, nrows, n / g.block_size * g.type_size);
    int64_t bad;
    {
        py::gil_scoped_release nogil;
        bad = sqat::cpu::quantize_rows(type, x.data(), nrows, n, qw, out.mutable_data(), threads);
    }
    if (bad >= 0)
        throw py::value_error("non-finite value at row " + std::to_string(bad / n) + ", column " +
                              std::to_string(bad % n));
    return out;
}

F32Array fake_quant(const F32Array& x, int type, const std::optional<F32Array>& imatrix, int threads) {
    require_2d(x, "x");
    const int64_t nrows = x.shape(0), n = x.shape(1);
    checked_geometry(type, n);
    const float* qw = checked_imatrix(imatrix, n);
    F32Array out({nrows, n});
    int64_t bad;
    {
        py::gil_scoped_release nogil;
        bad = sqat::cpu::fake_quant_rows(type, x.data(), nrows, n, qw, out.mutable_data(), threads);
    }
    if (bad >= 0)
        throw py::value_error("non-finite value at row " + std::to_string(bad / n) + ", column " +
                              std::to_string(bad % n));
    return out;
}

F32Array clipped_grad(const F32Array& x, int type, const std::optional<F32Array>& imatrix, const F32Array& grad,
                      int threads) {
    require_2d(x, "x");
    const int64_t nrows = x.shape(0), n = x.shape(1);
    checked_geometry(type, n);
    if (grad.ndim() != 2 || grad.shape(0) != nrows || grad.shape(1) != n)
        throw py::value_error("grad must have the shape of x");
    const float* qw = checked_imatrix(imatrix, n);
    F32Array out({nrows, n});
    {
        py::gil_scoped_release nogil;
        sqat::cpu::clipped_grad_rows(type, x.data(), nrows, n, qw, grad.data(), out.mutable_data(), threads);
    }
    return out;
}

F32Array emulate_cuda_clipped_grad(const F32Array& x, int type, const std::optional<F32Array>& imatrix,
                                   const F32Array& grad, int64_t grid, int64_t block) {
    require_2d(x, "x");
    const int64_t nrows = x.shape(0), n = x.shape(1);
    checked_geometry(type, n);
    if (grad.ndim() != 2 || grad.shape(0) != nrows || grad.shape(1) != n)
        throw py::value_error("grad must have the shape of x");
    F32Array out({nrows, n});
    std::vector<float> sigma2(static_cast<size_t>(nrows));
    const sqat::QuantizeArgs a{type, x.data(), checked_imatrix(imatrix, n), nullptr, nullptr, nrows, n};
    {
        py::gil_scoped_release nogil;
        sqat::cuda::emulate_clipped_grad(a, sigma2.data(), grad.data(), out.mutable_data(), grid, block);
    }
    return out;
}

F32Array dequantize(const U8Array& data, int type, int64_t n_per_row, int threads) {
    require_2d(data, "data");
    const sqat::Geometry g = checked_geometry(type, n_per_row);
    const int64_t nrows = data.shape(0);
    if (data.shape(1) != n_per_row / g.block_size * g.type_size)
        throw py::value_error("data rows hold " + std::to_string(data.shape(1)) + " bytes, expected " +
                              std::to_string(n_per_row / g.block_size * g.type_size));
    F32Array out({nrows, n_per_row});
    {
        py::gil_scoped_release nogil;
        sqat::cpu::dequantize_rows(type, data.data(), nrows, n_per_row, out.mutable_data(), threads);
    }
    return out;
}

U8Array emulate_cuda_quantize(const F32Array& x, int type, const std::optional<F32Array>& imatrix, int64_t grid,
                              int64_t block) {
    require_2d(x, "x");
    const int64_t nrows = x.shape(0), n = x.shape(1);
    const sqat::Geometry g = checked_geometry(type, n);
    U8Array out({nrows, n / g.block_size * g.type_size});
    std::vector<float> sigma2(static_cast<size_t>(nrows));
    const sqat::QuantizeArgs a{type, x.data(), checked_imatrix(imatrix, n), nullptr, out.mutable_data(), nrows, n};
    {
        py::gil_scoped_release nogil;
        sqat::cuda::emulate_quantize(a, sigma2.data(), grid, block);
    }
    return out;
}

F32Array emulate_cuda_fake_quant(const F32Array& x, int type, const std::optional<F32Array>& imatrix, int64_t grid,
                                 int64_t block) {
    require_2d(x, "x");
    const int64_t nrows = x.shape(0), n = x.shape(1);
    checked_geometry(type, n);
    F32Array out({nrows, n});
    std::vector<float> sigma2(static_cast<size_t>(nrows));
    const sqat::QuantizeArgs a{type, x.data(), checked_imatrix(imatrix, n), nullptr, nullptr, nrows, n};
    {
        py::gil_scoped_release nogil;
        sqat::cuda::emulate_fake_quant(a, sigma2.data(), out.mutable_data(), grid, block);
    }
    return out;
}

F32Array emulate_cuda_dequantize(const U8Array& data, int type, int64_t n_per_row, int64_t grid, int64_t block) {
    require_2d(data, "data");
    const sqat::Geometry g = checked_geometry(type, n_per_row);
    const int64_t nrows = data.shape(0);
    if (data.shape(1) != n_per_row / g.block_size * g.type_size) throw py::value_error("data has the wrong row size");
    F32Array out({nrows, n_per_row});
    const sqat::DequantizeArgs a{type, data.data(), out.mutable_data(), nrows, n_per_row};
    {
        py::gil_scoped_release nogil;
        sqat::cuda::emulate_dequantize(a, grid, block);
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "sqat-kernels native core: GGUF block quantizers (CPU threads, CUDA kernels).";

    m.def("geometry", [](int type) {
        const sqat::Geometry g = sqat::geometry(type);
        return py::make_tuple(g.block_size, g.type_size);
    }, py::arg("type"), "(block_size, type_size) of a ggml type id; (0, 0) if unsupported.");

    m.def("locate_block", [](int type, int64_t n_per_row, int64_t flat) {
        const sqat::BlockLocation l = sqat::locate_block(flat, n_per_row, checked_geometry(type, n_per_row));
        return py::make_tuple(l.row, l.col, l.x_offset, l.y_offset);
    }, py::arg("type"), py::arg("n_per_row"), py::arg("flat_block"),
       "(row, col, x_offset, y_offset) of block number flat_block, as the kernels compute it (64-bit).");

    m.def("quantize", &quantize, py::arg("x"), py::arg("type"), py::arg("imatrix") = py::none(),
          py::arg("threads") = 1, py::arg("out") = py::none(),
          "float32 [nrows, n] -> uint8 [nrows, row_bytes] on the CPU (into `out` when given).");
    m.def("fake_quant", &fake_quant, py::arg("x"), py::arg("type"), py::arg("imatrix") = py::none(),
          py::arg("threads") = 1, "float32 [nrows, n] -> float32 dequantize(quantize(x)), fused, on the CPU.");
    m.def("clipped_grad", &clipped_grad, py::arg("x"), py::arg("type"), py::arg("imatrix"), py::arg("grad"),
          py::arg("threads") = 1, "Clipped STE: grad where x is representable by its quantized block, else 0.");
    m.def("emulate_cuda_clipped_grad", &emulate_cuda_clipped_grad, py::arg("x"), py::arg("type"), py::arg("imatrix"),
          py::arg("grad"), py::arg("grid") = 0, py::arg("block") = 0,
          "Run the CUDA clipped-gradient kernel bodies over a grid on the host.");
    m.def("cuda_clipped_grad", [](int type, uintptr_t x, int64_t nrows, int64_t n, uintptr_t imatrix,
                                  uintptr_t scratch, uintptr_t grad, uintptr_t grad_out, uintptr_t stream) {
        checked_geometry(type, n);
        py::gil_scoped_release nogil;
        sqat::cuda::clipped_grad(type, x, nrows, n, imatrix, scratch, grad, grad_out, stream);
    }, py::arg("type"), py::arg("x"), py::arg("nrows"), py::arg("n_per_row"), py::arg("imatrix"),
       py::arg("sigma2_scratch"), py::arg("grad"), py::arg("grad_out"), py::arg("stream"),
       "Launch the clipped-gradient kernel on device pointers.");
    m.def("dequantize", &dequantize, py::arg("data"), py::arg("type"), py::arg("n_per_row"), py::arg("threads") = 1,
          "uint8 [nrows, row_bytes] -> float32 [nrows, n_per_row] on the CPU.");

    m.def("emulate_cuda_quantize", &emulate_cuda_quantize, py::arg("x"), py::arg("type"),
          py::arg("imatrix") = py::none(), py::arg("grid") = 0, py::arg("block") = 0,
          "Run the CUDA quantize kernel bodies over a grid on the host (grid <= 0: the real launch shape).");
    m.def("emulate_cuda_fake_quant", &emulate_cuda_fake_quant, py::arg("x"), py::arg("type"),
          py::arg("imatrix") = py::none(), py::arg("grid") = 0, py::arg("block") = 0,
          "Run the CUDA fake-quant kernel bodies over a grid on the host.");
    m.def("emulate_cuda_dequantize", &emulate_cuda_dequantize, py::arg("data"), py::arg("type"),
          py::arg("n_per_row"), py::arg("grid") = 0, py::arg("block") = 0,
          "Run the CUDA dequantize kernel bodies over a grid on the host.");

    m.def("cpu_variant", &sqat::cpu::active_variant, "The instruction-set variant the CPU loops use now.");
    m.def("cpu_variant_supported", [](const std::string& name) { return sqat::cpu::variant_supported(name.c_str()); },
          py::arg("name"), "Whether the variant is compiled in and runnable on this CPU.");
    m.def("set_cpu_variant", [](const std::string& name) { return sqat::cpu::set_variant(name.c_str()); },
          py::arg("name"), "Use this variant from now on; False (no change) if it is not supported.");
    m.def("set_openmp_allowed", &sqat::parallel::set_openmp_allowed, py::arg("allowed"),
          "Allow (default) or forbid running the CPU loops on an OpenMP runtime's threads already loaded in "
          "the process (PyTorch's) instead of sqat's own pool.");
    m.def("openmp_available", &sqat::parallel::openmp_available,
          "Whether the CPU loops run on a loaded OpenMP runtime's threads now.");
    m.def("cuda_compiled", &sqat::cuda::compiled, "Whether this build contains the CUDA kernels.");
    m.def("cuda_device_count", &sqat::cuda::device_count, "Usable CUDA devices (0 without driver or GPU).");
    m.def("cuda_quantize", [](int type, uintptr_t x, int64_t nrows, int64_t n, uintptr_t imatrix, uintptr_t scratch,
                              uintptr_t y, uintptr_t stream) {
        checked_geometry(type, n);
        py::gil_scoped_release nogil;
        sqat::cuda::quantize(type, x, nrows, n, imatrix, scratch, y, stream);
    }, py::arg("type"), py::arg("x"), py::arg("nrows"), py::arg("n_per_row"), py::arg("imatrix"),
       py::arg("sigma2_scratch"), py::arg("y"), py::arg("stream"), "Launch the quantize kernel on device pointers.");
    m.def("cuda_fake_quant", [](int type, uintptr_t x, int64_t nrows, int64_t n, uintptr_t imatrix,
                                uintptr_t scratch, uintptr_t out, uintptr_t stream) {
        checked_geometry(type, n);
        py::gil_scoped_release nogil;
        sqat::cuda::fake_quant(type, x, nrows, n, imatrix, scratch, out, stream);
    }, py::arg("type"), py::arg("x"), py::arg("nrows"), py::arg("n_per_row"), py::arg("imatrix"),
       py::arg("sigma2_scratch"), py::arg("out"), py::arg("stream"), "Launch the fake-quant kernel on device pointers.");
    m.def("cuda_dequantize", [](int type, uintptr_t y, int64_t nrows, int64_t n, uintptr_t x, uintptr_t stream) {
        checked_geometry(type, n);
        py::gil_scoped_release nogil;
        sqat::cuda::dequantize(type, y, nrows, n, x, stream);
    }, py::arg("type"), py::arg("y"), py::arg("nrows"), py::arg("n_per_row"), py::arg("x"), py::arg("stream"),
       "Launch the dequantize kernel on device pointers.");
}
