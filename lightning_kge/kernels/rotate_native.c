/* Native CPU kernels of rotate_distance; compiled and loaded by rotate_native.py.
 *
 * Rows are real pairs [re_1 .. re_h, im_1 .. im_h]; the distance of a query row x and a table
 * row t is sum_i sqrt((x_re,i - t_re,i)^2 + (x_im,i - t_im,i)^2).
 *
 * The (query, candidate) pairs arrive grouped by entity: segment s owns the entries
 * entry[start[s]] .. entry[start[s + 1] - 1], whose candidate is table row entity[s] (one
 * segment per distinct entity, in increasing entity order). An entry is
 *   - per-query ids (shared == 0): a flat output position p = b * cols + c, query b = p / cols;
 *   - shared ids (shared == 1): a column c, paired with every query b (positions b * cols + c).
 * A segment reads its table row once (it stays in L1 while the segment's queries stream past;
 * the queries are few and stay in L2/L3), so a pass reads every used table row once.
 *
 * Backward, with G = dL/dD, u = x_re - t_re, v = x_im - t_im, m = |u + iv|, f = G / m (0 where
 * m = 0):
 *   grad_q[b]    += f * (u, v)   summed over the pairs of query b,
 *   grad_table[e] = -sum of f * (u, v) over the pairs of entity e (0 for unused rows),
 * both from one evaluation of m and f per pair and dimension. Segments are split among threads;
 * each thread adds its query gradients to its own slice of grad_q_parts (the caller sums the
 * slices), and each table row is written by the one thread that owns its segment.
 *
 * The file includes itself once per floating-point type (T, SUFFIX, SQRT).
 */
#ifndef T

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID() omp_get_thread_num()
#else
#define THREAD_ID() 0
#endif

#define JOIN_(a, b) a##_##b
#define JOIN(a, b) JOIN_(a, b)
#define NAME(name) JOIN(name, SUFFIX)

#define T float
#define SUFFIX f32
#define SQRT sqrtf
#include __FILE__
#undef T
#undef SUFFIX
#undef SQRT

#define T double
#define SUFFIX f64
#define SQRT sqrt
#include __FILE__

#else /* the kernels for one type T */

static inline T NAME(distance)(const T* restrict x, const T* restrict t, int64_t h) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < h; ++i) {
    T u = x[i] - t[i], v = x[i + h] - t[i + h];
    acc += SQRT(u * u + v * v);
  }
  return acc;
}

/* Adds g * d|x - t| / dx to gx and to acc (the caller negates acc for t). */
static inline void NAME(gradient)(const T* restrict x, const T* restrict t, T g, T* restrict gx,
                                  T* restrict acc, int64_t h) {
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    T u = x[i] - t[i], v = x[i + h] - t[i + h];
    T m = SQRT(u * u + v * v);
    T f = g / (m > 0 ? m : (T)1); /* selects, not branches: vectorised without masks */
    f = m > 0 ? f : (T)0;
    T fu = f * u, fv = f * v;
    gx[i] += fu;
    gx[i + h] += fv;
    acc[i] += fu;
    acc[i + h] += fv;
  }
}

void NAME(rotate_forward)(const T* table, const T* q, int64_t h, int64_t rows, int64_t cols,
                          int shared, int64_t nseg, const int64_t* start, const int64_t* entity,
                          const int64_t* entry, T* out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t s = 0; s < nseg; ++s) {
    const T* t = table + entity[s] * 2 * h;
    for (int64_t j = start[s]; j < start[s + 1]; ++j) {
      int64_t e = entry[j];
      if (shared) {
        for (int64_t b = 0; b < rows; ++b) out[b * cols + e] = NAME(distance)(q + b * 2 * h, t, h);
      } else {
        out[e] = NAME(distance)(q + (e / cols) * 2 * h, t, h);
      }
    }
  }
}

/* grad_q_parts: threads x rows x 2h, zeroed by the caller, or NULL (no query gradient);
 * grad_table: num_entities x 2h, every row written (needs nseg >= 1), or NULL (no table
 * gradient); scratch: threads x 2 x 2h. */
void NAME(rotate_backward)(const T* table, const T* q, int64_t h, int64_t rows, int64_t cols,
                           int shared, int64_t nseg, const int64_t* start, const int64_t* entity,
                           const int64_t* entry, const T* grad, int64_t num_entities,
                           T* grad_table, T* grad_q_parts, T* scratch, int threads) {
  const int64_t w = 2 * h;
#pragma omp parallel num_threads(threads)
  {
    T* acc = scratch + (int64_t)THREAD_ID() * 2 * w;
    /* Without grad_q_parts, every query's gradient goes to one scratch row that is never read. */
    T* gq = grad_q_parts ? grad_q_parts + (int64_t)THREAD_ID() * rows * w : acc + w;
    const int64_t qstride = grad_q_parts ? w : 0;
#pragma omp for schedule(static)
    for (int64_t s = 0; s < nseg; ++s) {
      const T* t = table + entity[s] * w;
      memset(acc, 0, w * sizeof(T));
      for (int64_t j = start[s]; j < start[s + 1]; ++j) {
        int64_t e = entry[j];
        if (shared) {
          for (int64_t b = 0; b < rows; ++b)
            NAME(gradient)(q + b * w, t, grad[b * cols + e], gq + b * qstride, acc, h);
        } else {
          int64_t b = e / cols;
          NAME(gradient)(q + b * w, t, grad[e], gq + b * qstride, acc, h);
        }
      }
      if (!grad_table) continue;
      /* Rows between the previous segment's entity and this one are unused: zero them. */
      int64_t first = s == 0 ? 0 : entity[s - 1] + 1;
      memset(grad_table + first * w, 0, (entity[s] - first) * w * sizeof(T));
      if (s == nseg - 1)
        memset(grad_table + (entity[s] + 1) * w, 0, (num_entities - entity[s] - 1) * w * sizeof(T));
      T* row = grad_table + entity[s] * w;
#pragma omp simd
      for (int64_t i = 0; i < w; ++i) row[i] = -acc[i];
    }
  }
}

#endif
