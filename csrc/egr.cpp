// EGR and its inverse (reference: ecf_engine/egr.py), CPU loops; CUDA kernels in egr_cuda.cu.
//
//   egr:         y (B, M, H, W)              -> slabs (B, 2*n_cs, H, W/2, p),  p = M / n_cs
//   egr_inverse: slabs (B, 2*n_cs, H, W2, p) -> y (B, n_cs*p, H, 2*W2)
//
// Slab 2s holds the anchors ((h + w) even) of channel segment s, slab 2s+1 its non-anchors;
// slab column j of row h is latent column 2j + phase, phase = h % 2 for anchors, 1 - h % 2
// otherwise. Pure data movement, so the result is bitwise equal to the reference.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

#ifdef WITH_CUDA
void egr_cuda(const at::Tensor& y, at::Tensor& out, int64_t n_cs);
void egr_inverse_cuda(const at::Tensor& slabs, at::Tensor& out, int64_t n_cs);
#endif

namespace {

// enough rows per task that a thread gets ~32k elements (ATen's grain size)
int64_t grain_rows(int64_t row_elements) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, row_elements));
}

template <typename T>
void egr_cpu(const T* y, T* out, int64_t B, int64_t n_cs, int64_t p, int64_t H, int64_t W2) {
  const int64_t G = 2 * n_cs, W = 2 * W2;
  // one task row = output row (b, g, h): W2 * p contiguous elements
  at::parallel_for(0, B * G * H, grain_rows(W2 * p), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t h = r % H, g = (r / H) % G, b = r / (H * G);
      const int64_t phase = (g % 2 == 0) ? h % 2 : 1 - h % 2;
      const T* src = y + ((b * n_cs + g / 2) * p * H + h) * W + phase;   // channel g/2 * p, row h
      T* dst = out + r * W2 * p;
      for (int64_t c = 0; c < p; ++c) {           // reads run along a latent row (stride 2)
        const T* src_c = src + c * H * W;
        for (int64_t j = 0; j < W2; ++j) dst[j * p + c] = src_c[2 * j];
      }
    }
  });
}

template <typename T>
void egr_inverse_cpu(const T* slabs, T* out, int64_t B, int64_t n_cs, int64_t p, int64_t H, int64_t W2) {
  const int64_t G = 2 * n_cs, M = n_cs * p, W = 2 * W2;
  // one task row = output row (b, m, h): W contiguous elements. Rows run channel-fastest so
  // that consecutive rows read the same two slab rows (stride p), which stay in cache.
  at::parallel_for(0, B * H * M, grain_rows(W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = r % M, h = (r / M) % H, b = r / (M * H);
      const T* anchor = slabs + ((b * G + 2 * (m / p)) * H + h) * W2 * p + m % p;
      const T* non_anchor = anchor + H * W2 * p;   // the next slab
      T* dst = out + ((b * M + m) * H + h) * W;
      for (int64_t w = 0; w < W; ++w) dst[w] = ((h + w) % 2 == 0 ? anchor : non_anchor)[(w / 2) * p];
    }
  });
}

}  // namespace

at::Tensor egr(const at::Tensor& y_in, int64_t n_cs) {
  TORCH_CHECK_VALUE(y_in.dim() == 4, "EGR expects y of shape (B, M, H, W), got ", y_in.sizes());
  const int64_t B = y_in.size(0), M = y_in.size(1), H = y_in.size(2), W = y_in.size(3);
  TORCH_CHECK_VALUE(n_cs > 0 && W % 2 == 0 && M % n_cs == 0,
                    "EGR needs an even width and M divisible by n_cs, got ", y_in.sizes(), ", n_cs=", n_cs);
  const at::Tensor y = y_in.contiguous();
  at::Tensor out = at::empty({B, 2 * n_cs, H, W / 2, M / n_cs}, y.options());
  if (y.is_cuda()) {
#ifdef WITH_CUDA
    egr_cuda(y, out, n_cs);
    return out;
#else
    TORCH_CHECK(false, "this build of the EGR extension has no CUDA code");
#endif
  }
  TORCH_CHECK_VALUE(y.is_cpu(), "EGR extension: unsupported device ", y.device());
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, y.scalar_type(), "egr_cpu", [&] {
    egr_cpu<scalar_t>(y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, n_cs, M / n_cs, H, W / 2);
  });
  return out;
}

at::Tensor egr_inverse(const at::Tensor& slabs_in, int64_t n_cs) {
  TORCH_CHECK_VALUE(slabs_in.dim() == 5, "inverse EGR expects slabs (B, G, H, W2, p), got ", slabs_in.sizes());
  const int64_t B = slabs_in.size(0), G = slabs_in.size(1), H = slabs_in.size(2), W2 = slabs_in.size(3),
                p = slabs_in.size(4);
  TORCH_CHECK_VALUE(n_cs > 0 && G == 2 * n_cs, "expected ", 2 * n_cs, " slabs, got ", G);
  const at::Tensor slabs = slabs_in.contiguous();
  at::Tensor out = at::empty({B, n_cs * p, H, 2 * W2}, slabs.options());
  if (slabs.is_cuda()) {
#ifdef WITH_CUDA
    egr_inverse_cuda(slabs, out, n_cs);
    return out;
#else
    TORCH_CHECK(false, "this build of the EGR extension has no CUDA code");
#endif
  }
  TORCH_CHECK_VALUE(slabs.is_cpu(), "EGR extension: unsupported device ", slabs.device());
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, slabs.scalar_type(), "egr_inverse_cpu", [&] {
    egr_inverse_cpu<scalar_t>(slabs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, n_cs, p, H, W2);
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("egr", &egr, "EGR: (B, M, H, W) -> (B, 2*n_cs, H, W/2, M/n_cs)");
  m.def("egr_inverse", &egr_inverse, "inverse EGR: (B, 2*n_cs, H, W2, p) -> (B, n_cs*p, H, 2*W2)");
}
