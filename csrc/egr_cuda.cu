// EGR and its inverse on CUDA tensors: one thread per output element, so writes are
// coalesced. Index conventions as in egr.cpp; called from there after the shape checks.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void egr_kernel(const T* __restrict__ y, T* __restrict__ out, int64_t n, int64_t n_cs, int64_t p,
                           int64_t H, int64_t W2) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    // out index i = (((b * G + g) * H + h) * W2 + j) * p + c
    int64_t r = i;
    const int64_t c = r % p;  r /= p;
    const int64_t j = r % W2; r /= W2;
    const int64_t h = r % H;  r /= H;
    const int64_t g = r % (2 * n_cs), b = r / (2 * n_cs);
    const int64_t w = 2 * j + ((g % 2 == 0) ? h % 2 : 1 - h % 2);
    out[i] = y[(((b * n_cs + g / 2) * p + c) * H + h) * 2 * W2 + w];
  }
}

template <typename T>
__global__ void egr_inverse_kernel(const T* __restrict__ slabs, T* __restrict__ out, int64_t n, int64_t n_cs,
                                   int64_t p, int64_t H, int64_t W2) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    // out index i = ((b * M + m) * H + h) * W + w
    int64_t r = i;
    const int64_t w = r % (2 * W2); r /= 2 * W2;
    const int64_t h = r % H;        r /= H;
    const int64_t m = r % (n_cs * p), b = r / (n_cs * p);
    const int64_t g = 2 * (m / p) + (h + w) % 2;
    out[i] = slabs[(((b * 2 * n_cs + g) * H + h) * W2 + w / 2) * p + m % p];
  }
}

int blocks_for(int64_t n) {
  return int(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)));
}

}  // namespace

void egr_cuda(const at::Tensor& y, at::Tensor& out, int64_t n_cs) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(y.device());
  const int64_t H = y.size(2), W2 = y.size(3) / 2, p = y.size(1) / n_cs;
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, y.scalar_type(), "egr_cuda", [&] {
    egr_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, n_cs, p, H, W2);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void egr_inverse_cuda(const at::Tensor& slabs, at::Tensor& out, int64_t n_cs) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(slabs.device());
  const int64_t H = slabs.size(2), W2 = slabs.size(3), p = slabs.size(4);
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, slabs.scalar_type(), "egr_inverse_cuda", [&] {
    egr_inverse_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        slabs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, n_cs, p, H, W2);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
