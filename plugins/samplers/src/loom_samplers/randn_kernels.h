/* torch.randn's float32 CPU numbers, the same bits, for loom_samplers._randn.
 *
 * torch draws a contiguous float32 tensor of 16 or more elements in two passes: one uniform
 * per element from its MT19937 engine, ``(random() & 0xFFFFFF) * 2**-24``, then Box-Muller
 * over each block of 16 (pairs j, j + 8) with avx_mathfun's Cephes log and sincos (x86 AVX2
 * kernel); a size that is not a multiple of 16 draws 16 more uniforms for a last, overlapping
 * block. The engine's one-number-at-a-time loop is most of torch's time. Here the engine makes
 * 624 numbers per twist in loops the compiler vectorises, and the Box-Muller repeats
 * avx_mathfun's operations with the multiply-adds that torch's build fuses written as explicit
 * FMAs (the extension is compiled with -ffp-contract=off, so the compiler adds no others), 8
 * lanes at a time (AVX2) or 16 (AVX-512: two blocks at once, each lane doing what the AVX2
 * lane does). Every operation is an IEEE one on its own lane, so the widths agree bit for bit.
 *
 * A draw can be finished in the same call, while it is in cache: times a scale (torchsde's
 * ``sqrt(var) * noise``), then a Brownian bridge's split of ``w`` (``left = w * left_diff *
 * h_reciprocal + noise``, ``right = w - left``), each operation rounded to float32 in
 * torchsde's order. (Finishing block by block as they are drawn was slower: a call per block.)
 */
#include <immintrin.h>
#include <stdint.h>

#define MT_N 624
#define MT_M 397
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))

/* What a draw is finished with (see the top of the file). */
typedef struct {
    float scale;       /* 1: no multiply */
    const float *w;    /* NULL: no bridge */
    float *right;      /* NULL: no right child */
    float left_diff, h_reciprocal;
} Finish;

/* --- the engine: torch's at::mt19937 ------------------------------------------------- */

typedef struct {
    uint32_t state[MT_N];
    int next; /* index of the next unused number in state; MT_N: twist first */
} Engine;

/* torch's mt19937(seed): the reference Knuth seeding of the low 32 bits. */
static void engine_seed(Engine *engine, uint64_t seed) {
    uint32_t *s = engine->state;
    s[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < MT_N; j++)
        s[j] = 1812433253u * (s[j - 1] ^ (s[j - 1] >> 30)) + j;
    engine->next = MT_N;
}

static inline AVX2 uint32_t mt_twist_one(uint32_t current, uint32_t next, uint32_t far) {
    uint32_t y = (current & 0x80000000u) | (next & 0x7fffffffu);
    return far ^ (y >> 1) ^ ((0u - (next & 1u)) & 0x9908b0dfu);
}

/* One twist of the state: the standard MT19937 recurrence in its three independent runs. */
static AVX2 void mt_twist(uint32_t *restrict s) {
    int j;
    for (j = 0; j < MT_N - MT_M; j++)
        s[j] = mt_twist_one(s[j], s[j + 1], s[j + MT_M]);
    for (; j < MT_N - 1; j++)
        s[j] = mt_twist_one(s[j], s[j + 1], s[j + MT_M - MT_N]);
    s[MT_N - 1] = mt_twist_one(s[MT_N - 1], s[0], s[MT_M - 1]);
}

/* Tempered outputs of the state turned into torch's float uniforms. */
static AVX2 void mt_uniforms(const uint32_t *restrict s, float *restrict out, int count) {
    for (int j = 0; j < count; j++) {
        uint32_t y = s[j];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        out[j] = (float)(y & 0xFFFFFFu) * (1.0f / 16777216.0f);
    }
}

static AVX2 void engine_uniforms(Engine *engine, float *out, int64_t count) {
    while (count > 0) {
        if (engine->next == MT_N) {
            mt_twist(engine->state);
            engine->next = 0;
        }
        int take = MT_N - engine->next;
        if (take > count)
            take = (int)count;
        mt_uniforms(engine->state + engine->next, out, take);
        engine->next += take;
        out += take;
        count -= take;
    }
}

/* --- AVX2: 8 lanes ------------------------------------------------------------------- */

static inline AVX2 __m256 set8(float value) { return _mm256_set1_ps(value); }

/* avx_mathfun's log256_ps, with torch's fused multiply-adds. */
static inline AVX2 __m256 log8(__m256 x) {
    const __m256 one = set8(1.0f);
    x = _mm256_max_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x00800000)));
    __m256i exponent = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
    x = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(~0x7f800000)));
    x = _mm256_or_ps(x, set8(0.5f));
    exponent = _mm256_sub_epi32(exponent, _mm256_set1_epi32(0x7f));
    __m256 e = _mm256_add_ps(_mm256_cvtepi32_ps(exponent), one);
    __m256 small = _mm256_cmp_ps(x, set8(0.707106781186547524f), _CMP_LT_OS);
    __m256 shifted = _mm256_and_ps(x, small);
    x = _mm256_sub_ps(x, one);
    e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
    x = _mm256_add_ps(x, shifted);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = set8(7.0376836292E-2f);
    y = _mm256_fmadd_ps(y, x, set8(-1.1514610310E-1f));
    y = _mm256_fmadd_ps(y, x, set8(1.1676998740E-1f));
    y = _mm256_fmadd_ps(y, x, set8(-1.2420140846E-1f));
    y = _mm256_fmadd_ps(y, x, set8(1.4249322787E-1f));
    y = _mm256_fmadd_ps(y, x, set8(-1.6668057665E-1f));
    y = _mm256_fmadd_ps(y, x, set8(2.0000714765E-1f));
    y = _mm256_fmadd_ps(y, x, set8(-2.4999993993E-1f));
    y = _mm256_fmadd_ps(y, x, set8(3.3333331174E-1f));
    y = _mm256_mul_ps(y, x);
    y = _mm256_fmadd_ps(y, z, _mm256_mul_ps(e, set8(-2.12194440e-4f)));
    y = _mm256_fnmadd_ps(z, set8(0.5f), y);
    x = _mm256_add_ps(x, y);
    return _mm256_fmadd_ps(e, set8(0.693359375f), x);
}

/* avx_mathfun's sincos256_ps, with torch's fused multiply-adds. */
static inline AVX2 void sincos8(__m256 x, __m256 *sine, __m256 *cosine) {
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 sign_sin = _mm256_and_ps(x, sign_mask);
    x = _mm256_andnot_ps(sign_mask, x);
    __m256i octant = _mm256_cvttps_epi32(_mm256_mul_ps(x, set8(1.27323954473516f)));
    octant = _mm256_and_si256(_mm256_add_epi32(octant, _mm256_set1_epi32(1)), _mm256_set1_epi32(~1));
    __m256 y = _mm256_cvtepi32_ps(octant);
    __m256 swap_sign = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_and_si256(octant, _mm256_set1_epi32(4)), 29));
    __m256 use_sine_poly = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
        _mm256_and_si256(octant, _mm256_set1_epi32(2)), _mm256_setzero_si256()));
    __m256 sign_cos = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_andnot_si256(_mm256_sub_epi32(octant, _mm256_set1_epi32(2)), _mm256_set1_epi32(4)), 29));
    sign_sin = _mm256_xor_ps(sign_sin, swap_sign);
    x = _mm256_fmadd_ps(y, set8(-0.78515625f), x);
    x = _mm256_fmadd_ps(y, set8(-2.4187564849853515625e-4f), x);
    x = _mm256_fmadd_ps(y, set8(-3.77489497744594108e-8f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 c = _mm256_fmadd_ps(set8(2.443315711809948E-005f), z, set8(-1.388731625493765E-003f));
    c = _mm256_fmadd_ps(c, z, set8(4.166664568298827E-002f));
    c = _mm256_mul_ps(c, z);
    c = _mm256_fmsub_ps(c, z, _mm256_mul_ps(z, set8(0.5f)));
    c = _mm256_add_ps(c, set8(1.0f));
    __m256 s = _mm256_fmadd_ps(set8(-1.9515295891E-4f), z, set8(8.3321608736E-3f));
    s = _mm256_fmadd_ps(s, z, set8(-1.6666654611E-1f));
    s = _mm256_mul_ps(s, z);
    s = _mm256_fmadd_ps(s, x, x);
    *sine = _mm256_xor_ps(_mm256_blendv_ps(c, s, use_sine_poly), sign_sin);
    *cosine = _mm256_xor_ps(_mm256_blendv_ps(s, c, use_sine_poly), sign_cos);
}

/* torch's normal_fill_16_AVX2 with mean 0 and std 1: one block's uniforms to normals. */
static inline AVX2 void box_muller_16(float *data) {
    const __m256 one = set8(1.0f), zero = _mm256_setzero_ps();
    __m256 u1 = _mm256_sub_ps(one, _mm256_loadu_ps(data));
    __m256 u2 = _mm256_loadu_ps(data + 8);
    __m256 radius = _mm256_sqrt_ps(_mm256_mul_ps(set8(-2.0f), log8(u1)));
    __m256 theta = _mm256_mul_ps(set8((float)(2.0 * 3.14159265358979323846)), u2);
    __m256 sine, cosine;
    sincos8(theta, &sine, &cosine);
    _mm256_storeu_ps(data, _mm256_fmadd_ps(_mm256_mul_ps(radius, cosine), one, zero));
    _mm256_storeu_ps(data + 8, _mm256_fmadd_ps(_mm256_mul_ps(radius, sine), one, zero));
}

/* ``f`` applied to out[start:stop] (see the top of the file). */
static AVX2 void finish_range(float *out, int64_t start, int64_t stop, const Finish *f) {
    const __m256 scale = set8(f->scale), left_diff = set8(f->left_diff), h_reciprocal = set8(f->h_reciprocal);
    int64_t i = start;
    for (; i + 8 <= stop; i += 8) {
        __m256 noise = _mm256_loadu_ps(out + i);
        if (f->scale != 1.0f)
            noise = _mm256_mul_ps(noise, scale);
        if (f->w == NULL) {
            _mm256_storeu_ps(out + i, noise);
            continue;
        }
        __m256 w = _mm256_loadu_ps(f->w + i);
        __m256 left = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(w, left_diff), h_reciprocal), noise);
        _mm256_storeu_ps(out + i, left);
        if (f->right != NULL)
            _mm256_storeu_ps(f->right + i, _mm256_sub_ps(w, left));
    }
    for (; i < stop; i++) {
        float noise = out[i];
        if (f->scale != 1.0f)
            noise = noise * f->scale;
        if (f->w == NULL) {
            out[i] = noise;
            continue;
        }
        float mean = f->w[i] * f->left_diff;
        mean = mean * f->h_reciprocal;
        out[i] = mean + noise;
        if (f->right != NULL)
            f->right[i] = f->w[i] - out[i];
    }
}

/* torch's last block for a size that is not a multiple of 16 (it overwrites part of the block
 * before it), then ``f``. */
static AVX2 void redraw_tail_and_finish(Engine *engine, float *out, int64_t count, const Finish *f) {
    if (count % 16 != 0) {
        engine_uniforms(engine, out + count - 16, 16);
        box_muller_16(out + count - 16);
    }
    if (f->scale != 1.0f || f->w != NULL)
        finish_range(out, 0, count, f);
}

/* torch.randn(count, generator=Generator().manual_seed(seed)) into out (count >= 16), finished
 * with f. */
static AVX2 void randn_avx2(float *out, int64_t count, uint64_t seed, const Finish *f) {
    Engine engine;
    engine_seed(&engine, seed);
    engine_uniforms(&engine, out, count);
    for (int64_t i = 0; i + 16 <= count; i += 16)
        box_muller_16(out + i);
    redraw_tail_and_finish(&engine, out, count, f);
}

/* --- AVX-512: 16 lanes, two blocks at once ------------------------------------------- */

static inline AVX512 __m512 set16(float value) { return _mm512_set1_ps(value); }

/* log8, 16 lanes. */
static inline AVX512 __m512 log16(__m512 x) {
    const __m512 one = set16(1.0f);
    x = _mm512_max_ps(x, _mm512_castsi512_ps(_mm512_set1_epi32(0x00800000)));
    __m512i exponent = _mm512_srli_epi32(_mm512_castps_si512(x), 23);
    x = _mm512_and_ps(x, _mm512_castsi512_ps(_mm512_set1_epi32(~0x7f800000)));
    x = _mm512_or_ps(x, set16(0.5f));
    exponent = _mm512_sub_epi32(exponent, _mm512_set1_epi32(0x7f));
    __m512 e = _mm512_add_ps(_mm512_cvtepi32_ps(exponent), one);
    __mmask16 small = _mm512_cmp_ps_mask(x, set16(0.707106781186547524f), _CMP_LT_OS);
    __m512 shifted = _mm512_maskz_mov_ps(small, x);
    x = _mm512_sub_ps(x, one);
    e = _mm512_sub_ps(e, _mm512_maskz_mov_ps(small, one));
    x = _mm512_add_ps(x, shifted);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 y = set16(7.0376836292E-2f);
    y = _mm512_fmadd_ps(y, x, set16(-1.1514610310E-1f));
    y = _mm512_fmadd_ps(y, x, set16(1.1676998740E-1f));
    y = _mm512_fmadd_ps(y, x, set16(-1.2420140846E-1f));
    y = _mm512_fmadd_ps(y, x, set16(1.4249322787E-1f));
    y = _mm512_fmadd_ps(y, x, set16(-1.6668057665E-1f));
    y = _mm512_fmadd_ps(y, x, set16(2.0000714765E-1f));
    y = _mm512_fmadd_ps(y, x, set16(-2.4999993993E-1f));
    y = _mm512_fmadd_ps(y, x, set16(3.3333331174E-1f));
    y = _mm512_mul_ps(y, x);
    y = _mm512_fmadd_ps(y, z, _mm512_mul_ps(e, set16(-2.12194440e-4f)));
    y = _mm512_fnmadd_ps(z, set16(0.5f), y);
    x = _mm512_add_ps(x, y);
    return _mm512_fmadd_ps(e, set16(0.693359375f), x);
}

/* sincos8, 16 lanes. */
static inline AVX512 void sincos16(__m512 x, __m512 *sine, __m512 *cosine) {
    const __m512i sign_mask = _mm512_set1_epi32((int)0x80000000u);
    __m512i sign_sin = _mm512_and_si512(_mm512_castps_si512(x), sign_mask);
    x = _mm512_castsi512_ps(_mm512_andnot_si512(sign_mask, _mm512_castps_si512(x)));
    __m512i octant = _mm512_cvttps_epi32(_mm512_mul_ps(x, set16(1.27323954473516f)));
    octant = _mm512_and_si512(_mm512_add_epi32(octant, _mm512_set1_epi32(1)), _mm512_set1_epi32(~1));
    __m512 y = _mm512_cvtepi32_ps(octant);
    __m512i swap_sign = _mm512_slli_epi32(_mm512_and_si512(octant, _mm512_set1_epi32(4)), 29);
    __mmask16 use_sine_poly = _mm512_cmpeq_epi32_mask(
        _mm512_and_si512(octant, _mm512_set1_epi32(2)), _mm512_setzero_si512());
    __m512i sign_cos = _mm512_slli_epi32(
        _mm512_andnot_si512(_mm512_sub_epi32(octant, _mm512_set1_epi32(2)), _mm512_set1_epi32(4)), 29);
    sign_sin = _mm512_xor_si512(sign_sin, swap_sign);
    x = _mm512_fmadd_ps(y, set16(-0.78515625f), x);
    x = _mm512_fmadd_ps(y, set16(-2.4187564849853515625e-4f), x);
    x = _mm512_fmadd_ps(y, set16(-3.77489497744594108e-8f), x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 c = _mm512_fmadd_ps(set16(2.443315711809948E-005f), z, set16(-1.388731625493765E-003f));
    c = _mm512_fmadd_ps(c, z, set16(4.166664568298827E-002f));
    c = _mm512_mul_ps(c, z);
    c = _mm512_fmsub_ps(c, z, _mm512_mul_ps(z, set16(0.5f)));
    c = _mm512_add_ps(c, set16(1.0f));
    __m512 s = _mm512_fmadd_ps(set16(-1.9515295891E-4f), z, set16(8.3321608736E-3f));
    s = _mm512_fmadd_ps(s, z, set16(-1.6666654611E-1f));
    s = _mm512_mul_ps(s, z);
    s = _mm512_fmadd_ps(s, x, x);
    *sine = _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(_mm512_mask_blend_ps(use_sine_poly, c, s)), sign_sin));
    *cosine = _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(_mm512_mask_blend_ps(use_sine_poly, s, c)), sign_cos));
}

static inline AVX512 __m512 join(const float *low, const float *high) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(low)), _mm256_loadu_ps(high), 1);
}

static inline AVX512 void split_store(float *low, float *high, __m512 value) {
    _mm256_storeu_ps(low, _mm512_castps512_ps256(value));
    _mm256_storeu_ps(high, _mm512_extractf32x8_ps(value, 1));
}

/* box_muller_16 on the blocks at data and data + 16, one in each half of the lanes. */
static inline AVX512 void box_muller_32(float *data) {
    const __m512 one = set16(1.0f), zero = _mm512_setzero_ps();
    __m512 u1 = _mm512_sub_ps(one, join(data, data + 16));
    __m512 u2 = join(data + 8, data + 24);
    __m512 radius = _mm512_sqrt_ps(_mm512_mul_ps(set16(-2.0f), log16(u1)));
    __m512 theta = _mm512_mul_ps(set16((float)(2.0 * 3.14159265358979323846)), u2);
    __m512 sine, cosine;
    sincos16(theta, &sine, &cosine);
    split_store(data, data + 16, _mm512_fmadd_ps(_mm512_mul_ps(radius, cosine), one, zero));
    split_store(data + 8, data + 24, _mm512_fmadd_ps(_mm512_mul_ps(radius, sine), one, zero));
}

/* randn_avx2, with the blocks' Box-Muller two at a time. */
static AVX512 void randn_avx512(float *out, int64_t count, uint64_t seed, const Finish *f) {
    Engine engine;
    engine_seed(&engine, seed);
    engine_uniforms(&engine, out, count);
    int64_t i = 0;
    for (; i + 32 <= count; i += 32)
        box_muller_32(out + i);
    if (i + 16 <= count)
        box_muller_16(out + i);
    redraw_tail_and_finish(&engine, out, count, f);
}
