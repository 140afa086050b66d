// y = x W^T + b for the few rows of a text query, streaming the weights once, and a text query's
// whole way from token ids to its normalised vector around it (issue #4).
//
// A query is about 8 token vectors, so a linear layer's time is reading its weight matrix: oneDNN
// reads it at 8-17 GB/s on a 2-core AMD EPYC, this loop at 20 GB/s on one core and 26-40 GB/s on two.
// The weights are packed once in column blocks of 32 ([N/32][K][32]), so that each block streams
// from memory in order while 8 rows x 32 columns of sums stay in 16 AVX-512 registers. The
// opt-in bf16 text tower packs them as bf16 (half the bytes) and sums in fp32 all the same.
//
// Also the bf16 image tower's attention (attention(), further down), whose 50 positions torch's
// flash attention handles slowly.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

constexpr int64_t BLOCK = 32;
constexpr int64_t MAX_ROWS = 8;  // 9-12 rows in one pass took 20-35% longer than two passes

// Every query streams all the weights from memory. In 2 MB pages the prefetchers run on without a
// page walk every 4 KB: 10-20% faster on the 2-core EPYC. Mapped here rather than taken from malloc,
// which kept the freed plain weights' memory (about 100 MB more per process).
static torch::Tensor in_huge_pages(std::vector<int64_t> sizes, torch::ScalarType dtype) {
  constexpr size_t HUGE_PAGE = 2 << 20;
  size_t bytes = c10::elementSize(dtype);
  for (auto size : sizes) bytes *= size;
  const size_t mapped = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE + HUGE_PAGE;
  auto* start = static_cast<char*>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (start == MAP_FAILED) throw std::bad_alloc();
  // Keep a 2 MB-aligned stretch of whole 4 KB pages; give the rest back.
  auto* aligned = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(start) + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
  const size_t length = (bytes + 4095) / 4096 * 4096;
  if (aligned > start) munmap(start, aligned - start);
  if (start + mapped > aligned + length) munmap(aligned + length, start + mapped - aligned - length);
  madvise(aligned, length, MADV_HUGEPAGE);  // advice: refusing it only costs speed
  return torch::from_blob(
      aligned, sizes, [length](void* block) { munmap(block, length); }, dtype);
}

// bf16 weights (MEEPO_CPU_TEXT_PRECISION=bf16) halve the bytes a query reads; the sums stay fp32.
torch::Tensor pack(const torch::Tensor& weight, bool bf16) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat && weight.is_cpu(),
              "a 2-d float32 CPU weight");
  TORCH_CHECK(weight.size(0) % BLOCK == 0, "out_features must be a multiple of ", BLOCK);
  const int64_t blocks = weight.size(0) / BLOCK, k = weight.size(1);
  auto packed = in_huge_pages({blocks, k, BLOCK}, bf16 ? torch::kBFloat16 : torch::kFloat);
  auto columns = weight.reshape({blocks, BLOCK, k}).transpose(1, 2);
  // bf16 blocks interleave their two halves (0, 16, 1, 17, ...): a shift and a mask then make the
  // two fp32 vectors, no lane-crossing widening.
  if (bf16) columns = columns.reshape({blocks, k, 2, BLOCK / 2}).transpose(2, 3).reshape({blocks, k, BLOCK});
  packed.copy_(columns);
  return packed;
}

// e^x for x <= 0 (softmax after subtracting the row's highest score, GELU's e^-z^2): Cephes' expf
// polynomial, relative error about 1e-7, scaled by 2^n in one instruction.
static inline __m512 exp_of_non_positive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// torch's erf GELU, x/2 (1 + erf(x/sqrt 2)), with the erf formula of its vectorised kernel
// (Abramowitz and Stegun 7.1.26, error under 1.5e-7) around Cephes' exp instead of Sleef's: within
// 1.2e-6 of torch's values, and closer to the exact GELU.
static inline __m512 gelu(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752440f));
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), _mm512_abs_ps(z), one));
  __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
  const __m512 e = exp_of_non_positive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
  const __m512 size = _mm512_fnmadd_ps(_mm512_mul_ps(e, t), r, one);  // 1 - t r e^-z^2 = erf(|z|)
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(INT32_MIN));
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(size), sign));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(one, erf));
}

// open_clip's QuickGELU, x sigmoid(1.702 x), which OpenAI's CLIP weights were trained with. The
// sigmoid from e^-|z| (the exp above takes no positive argument): 1 / (1 + e) for z >= 0, e / (1 + e)
// below, which keeps its precision where it is small.
static inline __m512 quick_gelu(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(1.702f));
  const __m512 e = exp_of_non_positive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(z)));
  const __mmask16 negative = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 sigmoid = _mm512_div_ps(_mm512_mask_mov_ps(one, negative, e), _mm512_add_ps(one, e));
  return _mm512_mul_ps(x, sigmoid);
}

// What a linear layer does with its sums: store them, store their GELU or QuickGELU, or add them to
// the output (a residual connection).
enum class Then { Store, Gelu, QuickGelu, AddTo };

static inline void load_block(const float* w, __m512& w0, __m512& w1) {
  w0 = _mm512_loadu_ps(w);
  w1 = _mm512_loadu_ps(w + 16);
}

static inline void load_block(const uint16_t* w, __m512& w0, __m512& w1) {
  const __m512i both = _mm512_loadu_si512(w);  // 32 bf16, interleaved by pack(): one cache line
  w0 = _mm512_castsi512_ps(_mm512_slli_epi32(both, 16));
  w1 = _mm512_castsi512_ps(_mm512_and_si512(both, _mm512_set1_epi32(0xFFFF0000)));
}

template <Then THEN, int ROWS, typename WEIGHT>
static void rows_times_block(const float* x, int64_t k, const WEIGHT* w, const float* bias, float* y, int64_t n) {
  __m512 sums[ROWS][2];
  for (int r = 0; r < ROWS; ++r) {
    sums[r][0] = _mm512_loadu_ps(bias);
    sums[r][1] = _mm512_loadu_ps(bias + 16);
  }
  for (int64_t i = 0; i < k; ++i) {
    __m512 w0, w1;
    load_block(w + i * BLOCK, w0, w1);
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xi = _mm512_set1_ps(x[r * k + i]);
      sums[r][0] = _mm512_fmadd_ps(xi, w0, sums[r][0]);
      sums[r][1] = _mm512_fmadd_ps(xi, w1, sums[r][1]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int half = 0; half < 2; ++half) {
      float* out = y + r * n + 16 * half;
      if constexpr (THEN == Then::Gelu) sums[r][half] = gelu(sums[r][half]);
      if constexpr (THEN == Then::QuickGelu) sums[r][half] = quick_gelu(sums[r][half]);
      if constexpr (THEN == Then::AddTo) sums[r][half] = _mm512_add_ps(_mm512_loadu_ps(out), sums[r][half]);
      _mm512_storeu_ps(out, sums[r][half]);
    }
  }
}

template <Then THEN, int ROWS, typename WEIGHT>
static void some_rows_times_block(int64_t rows, const float* x, int64_t k, const WEIGHT* w, const float* bias, float* y,
                                  int64_t n) {
  if constexpr (ROWS > 1) {
    if (rows < ROWS) return some_rows_times_block<THEN, ROWS - 1>(rows, x, k, w, bias, y, n);
  }
  rows_times_block<THEN, ROWS>(x, k, w, bias, y, n);
}

template <Then THEN, typename WEIGHT>
static void linear_into(const float* X, int64_t m, int64_t k, const WEIGHT* W, int64_t blocks, const float* B,
                        float* Y) {
  const int64_t n = blocks * BLOCK;
  // Rows are split evenly into passes of at most MAX_ROWS (12 rows: 6 + 6, not 8 + 4); the later
  // passes read the block again from the L2 cache, not from memory.
  const int64_t passes = (m + MAX_ROWS - 1) / MAX_ROWS, per_pass = passes ? (m + passes - 1) / passes : 0;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      for (int64_t r = 0; r < m; r += per_pass) {
        some_rows_times_block<THEN, MAX_ROWS>(std::min(per_pass, m - r), X + r * k, k, W + b * k * BLOCK,
                                              B + b * BLOCK, Y + r * n + b * BLOCK, n);
      }
    }
  });
}

// out = x packed^T + bias, then THEN; x contiguous, out of x's rows and the weight's columns.
template <Then THEN>
static void linear_to(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& bias,
                      torch::Tensor& out) {
  const bool bf16 = packed.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(x.scalar_type() == torch::kFloat && (bf16 || packed.scalar_type() == torch::kFloat) &&
                  bias.scalar_type() == torch::kFloat, "float32 tensors (the packed weight may be bf16)");
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == BLOCK && packed.is_contiguous(), "a weight from pack()");
  const int64_t k = x.size(-1), m = x.numel() / k, blocks = packed.size(0);
  TORCH_CHECK(packed.size(1) == k && bias.numel() == blocks * BLOCK && bias.is_contiguous(), "shapes do not match");
  TORCH_CHECK(x.is_contiguous() && out.is_contiguous() && out.numel() == m * blocks * BLOCK,
              "contiguous rows and an output of their columns");
  TORCH_CHECK(x.is_cpu() && packed.is_cpu() && bias.is_cpu() && out.is_cpu(), "CPU tensors");
  const float *X = x.data_ptr<float>(), *B = bias.data_ptr<float>();
  if (bf16) {
    linear_into<THEN>(X, m, k, reinterpret_cast<const uint16_t*>(packed.data_ptr<at::BFloat16>()), blocks, B,
                      out.data_ptr<float>());
  } else {
    linear_into<THEN>(X, m, k, packed.data_ptr<float>(), blocks, B, out.data_ptr<float>());
  }
}

torch::Tensor linear(const torch::Tensor& input, const torch::Tensor& packed, const torch::Tensor& bias, bool gelu,
                     bool quick_gelu) {
  const auto x = input.contiguous();
  auto sizes = x.sizes().vec();
  sizes.back() = packed.size(0) * BLOCK;
  auto out = torch::empty(sizes, x.options());
  TORCH_CHECK(!(gelu && quick_gelu), "one activation at most");
  if (quick_gelu) {
    linear_to<Then::QuickGelu>(x, packed, bias, out);
  } else if (gelu) {
    linear_to<Then::Gelu>(x, packed, bias, out);
  } else {
    linear_to<Then::Store>(x, packed, bias, out);
  }
  return out;
}

static void layer_norm(const float* x, const float* weight, const float* bias, double eps, int64_t rows, int64_t width,
                       float* y) {
  for (int64_t r = 0; r < rows; ++r, x += width, y += width) {
    double sum = 0, squares = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < width; ++i) sum += x[i];
    const double mean = sum / width;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < width; ++i) squares += (x[i] - mean) * (x[i] - mean);
    const float scale = float(1.0 / std::sqrt(squares / width + eps)), shift = float(mean);
    for (int64_t i = 0; i < width; ++i) y[i] = (x[i] - shift) * scale * weight[i] + bias[i];
  }
}

// q . k over n floats in a fixed order (16 lanes, then across them). A compiler-vectorised loop may
// add up differently where it is inlined, and skipping the start token must not change a bit.
static inline float dot(const float* q, const float* k, int64_t n) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t d = 0; d < n; d += 16) {
    const __mmask16 real = n - d >= 16 ? 0xFFFF : (1u << (n - d)) - 1;
    sum = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(real, q + d), _mm512_maskz_loadu_ps(real, k + d), sum);
  }
  return _mm512_reduce_add_ps(sum);
}

// Each position attends to itself and the positions before it. qkv [batch, length, 3 * width]
// holds positions that follow `before` earlier ones, the same for every text, whose keys and values
// are in earlier [before, 2 * width].
static void causal_attention(const float* qkv, const float* earlier, int64_t before, int64_t batch, int64_t length,
                             int64_t width, int64_t heads, float* out) {
  const int64_t head = width / heads, stride = 3 * width;
  const float scale = 1.0f / std::sqrt(float(head));
  std::vector<float> weights(before + length);
  for (int64_t b = 0; b < batch; ++b) {
    const float* sequence = qkv + b * length * stride;
    // Position j's key; its value follows it by a width in both layouts.
    auto key = [&](int64_t j) {
      return j < before ? earlier + j * 2 * width : sequence + (j - before) * stride + width;
    };
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < length; ++i) {
        const float* q = sequence + i * stride + h * head;
        const int64_t seen = before + i + 1;
        float highest = -INFINITY;
        for (int64_t j = 0; j < seen; ++j) {
          weights[j] = dot(q, key(j) + h * head, head) * scale;
          highest = std::max(highest, weights[j]);
        }
        float total = 0;
        for (int64_t j = 0; j < seen; ++j) total += weights[j] = std::exp(weights[j] - highest);
        float* o = out + (b * length + i) * width + h * head;
        std::fill(o, o + head, 0.0f);
        for (int64_t j = 0; j < seen; ++j) {
          const float* v = key(j) + width + h * head;
          const float weight = weights[j] / total;
          for (int64_t d = 0; d < head; ++d) o[d] += weight * v[d];
        }
      }
    }
  }
}

// A causal text tower of plain CLIP blocks, start to end in one call: per block the 12 tensors
// ln_1 weight and bias, packed qkv weight and bias, packed out weight and bias, ln_2 weight and
// bias, packed c_fc weight and bias, packed c_proj weight and bias. Between the linear layers a
// query's work is small, and Python's per-operation overhead was 15-20% of it.
// The input's positions follow `before` earlier ones whose keys and values are in earlier
// [blocks, before, 2 * width]; a single text's own are written to keep [blocks, length, 2 * width].
static torch::Tensor run_tower(const torch::Tensor& input, const std::vector<torch::Tensor>& blocks, int64_t heads,
                               double eps, bool quick_gelu, const float* earlier, int64_t before, float* keep) {
  TORCH_CHECK(input.dim() == 3 && input.scalar_type() == torch::kFloat && input.is_cpu(),
              "a [batch, length, width] float32 CPU input");
  TORCH_CHECK(blocks.size() % 12 == 0, "12 tensors per block");
  for (size_t i = 0; i < blocks.size(); ++i) {
    const bool weight = i % 12 == 2 || i % 12 == 4 || i % 12 == 8 || i % 12 == 10;  // linear_to() checks those
    const bool fp32 = weight || blocks[i].scalar_type() == torch::kFloat;
    TORCH_CHECK(blocks[i].is_contiguous() && blocks[i].is_cpu() && fp32, "contiguous float32 CPU tensors");
  }
  auto x = input.contiguous().clone();
  const int64_t batch = x.size(0), length = x.size(1), width = x.size(2), rows = batch * length;
  TORCH_CHECK(width % heads == 0, "width must split into the heads");
  TORCH_CHECK(!keep || batch == 1, "keys and values are kept for a single text");
  auto normed = torch::empty_like(x), attended = torch::empty_like(x);
  for (size_t i = 0; i < blocks.size(); i += 12) {
    const auto* p = &blocks[i];
    const int64_t block = i / 12;
    TORCH_CHECK(p[0].numel() == width && p[6].numel() == width, "layer norms of the tower's width");
    layer_norm(x.data_ptr<float>(), p[0].data_ptr<float>(), p[1].data_ptr<float>(), eps, rows, width,
               normed.data_ptr<float>());
    auto qkv = torch::empty({batch, length, 3 * width}, x.options());
    linear_to<Then::Store>(normed, p[2], p[3], qkv);
    if (keep) {
      for (int64_t t = 0; t < length; ++t) {
        const float* key = qkv.data_ptr<float>() + t * 3 * width + width;
        std::copy(key, key + 2 * width, keep + (block * length + t) * 2 * width);
      }
    }
    causal_attention(qkv.data_ptr<float>(), earlier ? earlier + block * before * 2 * width : nullptr, before, batch,
                     length, width, heads, attended.data_ptr<float>());
    linear_to<Then::AddTo>(attended, p[4], p[5], x);
    layer_norm(x.data_ptr<float>(), p[6].data_ptr<float>(), p[7].data_ptr<float>(), eps, rows, width,
               normed.data_ptr<float>());
    // The MLP's GELU is applied to the sums in registers: torch's own took 0.3-0.4 ms a query.
    auto hidden = torch::empty({batch, length, p[8].size(0) * BLOCK}, x.options());
    if (quick_gelu) {
      linear_to<Then::QuickGelu>(normed, p[8], p[9], hidden);
    } else {
      linear_to<Then::Gelu>(normed, p[8], p[9], hidden);
    }
    linear_to<Then::AddTo>(hidden, p[10], p[11], x);
  }
  return x;
}

torch::Tensor causal_tower(const torch::Tensor& input, const std::vector<torch::Tensor>& blocks, int64_t heads,
                           double eps, bool quick_gelu) {
  return run_tower(input, blocks, heads, eps, quick_gelu, nullptr, 0, nullptr);
}

// The keys and values ([blocks, 1, 2 * width]) of a text's first token at its first position: the
// start-of-text token every query begins with. No later position changes them (the tower is
// causal), so encode_text takes them from here instead of computing them again for each query.
torch::Tensor start_of_text(int64_t token, const torch::Tensor& token_embedding, const torch::Tensor& positional,
                            const std::vector<torch::Tensor>& blocks, int64_t heads, double eps, bool quick_gelu) {
  TORCH_CHECK(token >= 0 && token < token_embedding.size(0), "a token id outside the vocabulary");
  const int64_t width = token_embedding.size(1);
  auto x = (token_embedding[token] + positional[0]).reshape({1, 1, width});
  auto kept = torch::empty({int64_t(blocks.size() / 12), 1, 2 * width}, x.options());
  run_tower(x, blocks, heads, eps, quick_gelu, nullptr, 0, kept.data_ptr<float>());
  return kept;
}

// open_clip's encode_text, normalised, for [batch, context] token ids: the embeddings, the tower up
// to the last end-of-text token (the tower is causal and pools there, so the padding after it cannot
// change the result), the final layer norm of each text's end-of-text row (its highest token id:
// open_clip's argmax pooling), the projection and the normalisation. After the weights have streamed
// through the caches, each step in Python had cost 0.1-0.4 ms.
torch::Tensor encode_text(const torch::Tensor& tokens, const torch::Tensor& token_embedding,
                          const torch::Tensor& positional, const std::vector<torch::Tensor>& blocks, int64_t heads,
                          double eps, bool quick_gelu, const torch::Tensor& final_weight, const torch::Tensor& final_bias,
                          double final_eps, const torch::Tensor& projection, int64_t start_token,
                          const torch::Tensor& start) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == torch::kLong && tokens.is_cpu(),
              "[batch, context] CPU token ids");
  for (const auto* tensor : {&token_embedding, &positional, &final_weight, &final_bias, &projection, &start}) {
    TORCH_CHECK(tensor->is_contiguous() && tensor->scalar_type() == torch::kFloat && tensor->is_cpu(),
                "contiguous float32 CPU tensors");
  }
  const auto ids = tokens.contiguous();
  const int64_t batch = ids.size(0), context = ids.size(1), width = token_embedding.size(1);
  const int64_t vocabulary = token_embedding.size(0), dimension = projection.size(1);
  TORCH_CHECK(context >= 1 && positional.size(0) >= context && positional.size(1) == width, "positions of the width");
  TORCH_CHECK(final_weight.numel() == width && final_bias.numel() == width, "a final layer norm of the width");
  TORCH_CHECK(projection.dim() == 2 && projection.size(0) == width, "a [width, dimension] projection");
  const int64_t* id = ids.data_ptr<int64_t>();
  std::vector<int64_t> ends(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t* text = id + b * context;
    ends[b] = std::max_element(text, text + context) - text;  // the first highest, as argmax
  }
  const int64_t length = batch ? *std::max_element(ends.begin(), ends.end()) + 1 : 0;
  // Texts that begin with the start token skip it: its keys and values come from start_of_text().
  bool skip = batch > 0 && start.numel() == int64_t(blocks.size() / 12) * 2 * width && start.is_contiguous();
  for (int64_t b = 0; b < batch; ++b) skip = skip && id[b * context] == start_token && ends[b] > 0;
  const int64_t first = skip ? 1 : 0;
  auto x = torch::empty({batch, length - first, width}, token_embedding.options());
  float* row = x.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = first; t < length; ++t, row += width) {
      const int64_t token = id[b * context + t];
      TORCH_CHECK(token >= 0 && token < vocabulary, "a token id outside the vocabulary");
      const float *embedding = token_embedding.data_ptr<float>() + token * width,
                  *position = positional.data_ptr<float>() + t * width;
      for (int64_t i = 0; i < width; ++i) row[i] = embedding[i] + position[i];
    }
  }
  x = run_tower(x, blocks, heads, eps, quick_gelu, skip ? start.data_ptr<float>() : nullptr, first, nullptr);
  auto out = torch::zeros({batch, dimension}, x.options());
  std::vector<float> pooled(width);
  const float* project = projection.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    layer_norm(x.data_ptr<float>() + (b * (length - first) + ends[b] - first) * width, final_weight.data_ptr<float>(),
               final_bias.data_ptr<float>(), final_eps, 1, width, pooled.data());
    float* y = out.data_ptr<float>() + b * dimension;
    for (int64_t i = 0; i < width; ++i) {
      for (int64_t j = 0; j < dimension; ++j) y[j] += pooled[i] * project[i * dimension + j];
    }
    double squares = 0;
    for (int64_t j = 0; j < dimension; ++j) squares += double(y[j]) * y[j];
    const float norm = float(std::max(std::sqrt(squares), 1e-12));  // F.normalize's eps
    for (int64_t j = 0; j < dimension; ++j) y[j] /= norm;
  }
  return out;
}

static inline __m512 bf16_to_float(const void* from) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(static_cast<const __m256i*>(from)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// Round to nearest even, as torch does (no NaNs here: softmax weights of finite scores).
static inline void float_to_bf16(__m512 value, void* to) {
  const __m512i bits = _mm512_castps_si512(value);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
  _mm256_storeu_si256(static_cast<__m256i*>(to), _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16)));
}

// c = a b for row-major fp32 blocks: a [rows, k] (its values broadcast), b [k, columns] with
// columns a multiple of 16. Up to 4 rows x 64 columns of sums at a time: 16 independent chains
// keep the FMA units busy, where one chain would wait 4 cycles on each sum.
template <int ROWS, int CHUNKS>
static void times_block(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c, int64_t ldc) {
  __m512 sums[ROWS][CHUNKS];
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < CHUNKS; ++j) sums[r][j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    __m512 row[CHUNKS];
    for (int j = 0; j < CHUNKS; ++j) row[j] = _mm512_loadu_ps(b + i * ldb + 16 * j);
    for (int r = 0; r < ROWS; ++r) {
      const __m512 value = _mm512_set1_ps(a[r * lda + i]);
      for (int j = 0; j < CHUNKS; ++j) sums[r][j] = _mm512_fmadd_ps(value, row[j], sums[r][j]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int j = 0; j < CHUNKS; ++j) _mm512_storeu_ps(c + r * ldc + 16 * j, sums[r][j]);
}

template <int ROWS>
static void times_rows(int64_t chunks, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c,
                       int64_t ldc) {
  switch (chunks) {
    case 1: return times_block<ROWS, 1>(a, lda, b, ldb, k, c, ldc);
    case 2: return times_block<ROWS, 2>(a, lda, b, ldb, k, c, ldc);
    case 3: return times_block<ROWS, 3>(a, lda, b, ldb, k, c, ldc);
    default: return times_block<ROWS, 4>(a, lda, b, ldb, k, c, ldc);
  }
}

static void times(const float* a, int64_t lda, int64_t rows, const float* b, int64_t ldb, int64_t columns, int64_t k,
                  float* c, int64_t ldc) {
  for (int64_t r = 0; r < rows; r += 4) {
    for (int64_t j = 0; j < columns; j += 64) {
      const int64_t chunks = std::min<int64_t>(4, (columns - j) / 16);
      const float *block_a = a + r * lda, *block_b = b + j;
      float* block_c = c + r * ldc + j;
      switch (std::min<int64_t>(4, rows - r)) {
        case 1: times_rows<1>(chunks, block_a, lda, block_b, ldb, k, block_c, ldc); break;
        case 2: times_rows<2>(chunks, block_a, lda, block_b, ldb, k, block_c, ldc); break;
        case 3: times_rows<3>(chunks, block_a, lda, block_b, ldb, k, block_c, ldc); break;
        default: times_rows<4>(chunks, block_a, lda, block_b, ldb, k, block_c, ldc);
      }
    }
  }
}

// The image tower's attention (every position sees every other) over a bf16 [batch, length,
// 3 * width] qkv, in fp32. torch's bf16 flash attention takes 4.5-8 ms a layer for a batch of 32
// ViT-B-32 photos (50 positions, heads of 64): its tiling is made for long sequences.
torch::Tensor attention(const torch::Tensor& qkv, int64_t heads) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.scalar_type() == torch::kBFloat16 && qkv.is_contiguous() && qkv.is_cpu(),
              "a contiguous bf16 [batch, length, 3 * width] CPU input");
  const int64_t batch = qkv.size(0), length = qkv.size(1), width = qkv.size(2) / 3;
  TORCH_CHECK(qkv.size(2) == 3 * width && heads > 0 && width % heads == 0, "three widths of whole heads");
  const int64_t head = width / heads, padded = (length + 15) / 16 * 16, stride = 3 * width;
  TORCH_CHECK(head % 16 == 0, "heads of a multiple of 16");
  auto out = torch::empty({batch, length, width}, qkv.options());
  const auto* in = reinterpret_cast<const uint16_t*>(qkv.data_ptr<at::BFloat16>());
  auto* result = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(float(head)));
  at::parallel_for(0, batch * heads, 1, [&](int64_t first, int64_t last) {
    // Keys transposed ([head, padded], zero beyond the length): a row's scores come 16 at a time.
    std::vector<float> queries(length * head), keys(head * padded, 0.0f), values(length * head);
    std::vector<float> scores(length * padded), shares(length), sums(length * head);
    for (int64_t task = first; task < last; ++task) {
      const int64_t b = task / heads, h = task % heads;
      const uint16_t* sequence = in + b * length * stride + h * head;
      for (int64_t j = 0; j < length; ++j) {
        for (int64_t d = 0; d < head; d += 16) {
          const uint16_t* position = sequence + j * stride + d;
          _mm512_storeu_ps(&queries[j * head + d], _mm512_mul_ps(bf16_to_float(position), scale));
          float key[16];
          _mm512_storeu_ps(key, bf16_to_float(position + width));
          for (int e = 0; e < 16; ++e) keys[(d + e) * padded + j] = key[e];
          _mm512_storeu_ps(&values[j * head + d], bf16_to_float(position + 2 * width));
        }
      }
      times(queries.data(), head, length, keys.data(), padded, padded, head, scores.data(), padded);
      for (int64_t i = 0; i < length; ++i) {
        float* row = &scores[i * padded];
        __m512 highest = _mm512_set1_ps(-INFINITY);
        for (int64_t c = 0; c < length; c += 16) {
          const __mmask16 real = length - c >= 16 ? 0xFFFF : (1u << (length - c)) - 1;
          highest = _mm512_mask_max_ps(highest, real, highest, _mm512_loadu_ps(row + c));
        }
        const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(highest));
        __m512 total = _mm512_setzero_ps();
        for (int64_t c = 0; c < length; c += 16) {
          const __mmask16 real = length - c >= 16 ? 0xFFFF : (1u << (length - c)) - 1;
          const __m512 weight =
              _mm512_maskz_mov_ps(real, exp_of_non_positive(_mm512_sub_ps(_mm512_loadu_ps(row + c), top)));
          _mm512_storeu_ps(row + c, weight);
          total = _mm512_add_ps(total, weight);
        }
        shares[i] = 1.0f / _mm512_reduce_add_ps(total);
      }
      times(scores.data(), padded, length, values.data(), head, head, length, sums.data(), head);
      for (int64_t i = 0; i < length; ++i) {
        const __m512 share = _mm512_set1_ps(shares[i]);
        for (int64_t d = 0; d < head; d += 16) {
          float_to_bf16(_mm512_mul_ps(_mm512_loadu_ps(&sums[i * head + d]), share),
                        result + (b * length + i) * width + h * head + d);
        }
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  // Without the GIL, as torch's own operations: a worker's other threads go on serving meanwhile.
  const auto without_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  module.attr("BLOCK") = BLOCK;
  module.def("pack", &pack, "a [N, K] weight in the column blocks linear() reads, as float32 or bf16",
             pybind11::arg("weight"), pybind11::arg("bf16") = false, without_gil);
  module.def("linear", &linear,
             "input @ weight.T + bias with a weight from pack(), then the erf GELU if gelu, QuickGELU if quick_gelu",
             pybind11::arg("input"), pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("gelu") = false,
             pybind11::arg("quick_gelu") = false, without_gil);
  module.def("causal_tower", &causal_tower, "a causal text tower's blocks over a [batch, length, width] input",
             without_gil);
  module.def("start_of_text", &start_of_text, "the keys and values of a text's first token at its first position",
             without_gil);
  module.def("attention", &attention, "attention over a bf16 [batch, length, 3 * width] qkv, in fp32", without_gil);
  module.def("encode_text", &encode_text, "token ids to open_clip's normalised text vectors",
             without_gil);
}
