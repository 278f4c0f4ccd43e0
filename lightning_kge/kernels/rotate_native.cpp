// Native CPU kernels of the RotatE distance, and the row updates of the sparse optimizers, built and
// loaded by rotate_native.py.
//
// Rows are real pairs [re_1 .. re_h, im_1 .. im_h]; the distance of a query row x and a table row
// t is sum_i sqrt((x_re,i - t_re,i)^2 + (x_im,i - t_im,i)^2).
//
// The (query, candidate) pairs of a call are grouped by entity with a stable counting sort of the
// ids: entity e owns the entries entry[start[e]] .. entry[start[e + 1] - 1]. An entry is
//   - per-query ids (B, C): a flat output position p = b * C + c, whose query is b = p / C;
//   - shared ids (C,): a column c, paired with every query b (positions b * C + c).
// Entities are split among torch's intra-op threads (at::parallel_for). An entity reads its table
// row once (it stays in L1 while its queries stream past; the queries are few and stay in L2/L3),
// so a pass reads every used table row once instead of once per pair.
//
// Backward, with G = dL/dD, u = x_re - t_re, v = x_im - t_im, m = |u + iv|, f = G / m (0 where
// m = 0):
//   grad_query[b] += f * (u, v)   summed over the pairs of query b,
//   grad_table[e]  = -sum of f * (u, v) over the pairs of entity e (0 for unused rows),
// both from one evaluation of m and f per pair and dimension. Each thread adds its query
// gradients to its own slice of a (threads, B, 2h) buffer, summed at the end; each table row is
// written by the one thread that owns its entity, so every row is written and none twice.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kSerialWork = 1 << 15;  // pairs x dimensions below which one thread does it all

struct Groups {
  int64_t base = 0;            // the lowest id of the call: entity base + e is grouped at e
  std::vector<int64_t> start;  // span + 1 offsets into entry, span = highest id - base + 1
  std::vector<int64_t> entry;  // positions (per-query) or columns (shared), grouped by entity
  int64_t span() const { return static_cast<int64_t>(start.size()) - 1; }
};

// Groups the pairs of a call by entity over the range of ids it holds, not over the whole table:
// an evaluation chunk of C consecutive ids costs O(C), whatever the table's size.
Groups group_by_entity(const at::Tensor& ids, int64_t num_entities) {
  const int64_t n = ids.numel();
  const int64_t* id = ids.data_ptr<int64_t>();
  int64_t low = num_entities, high = -1;
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_INDEX(id[i] >= 0 && id[i] < num_entities, "candidate id ", id[i],
                      " lies outside [0, ", num_entities, "): ids must index rows of the table");
    low = std::min(low, id[i]);
    high = std::max(high, id[i]);
  }
  Groups g;
  g.base = n ? low : 0;
  const int64_t span = n ? high - low + 1 : 0;
  g.start.assign(span + 1, 0);
  g.entry.resize(n);
  for (int64_t i = 0; i < n; ++i) ++g.start[id[i] - g.base + 1];
  for (int64_t e = 0; e < span; ++e) g.start[e + 1] += g.start[e];
  std::vector<int64_t> next(g.start.begin(), g.start.end() - 1);
  for (int64_t i = 0; i < n; ++i) g.entry[next[id[i] - g.base]++] = i;
  return g;
}

template <typename T>
inline T distance(const T* __restrict__ x, const T* __restrict__ t, int64_t h) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < h; ++i) {
    T u = x[i] - t[i], v = x[i + h] - t[i + h];
    acc += std::sqrt(u * u + v * v);
  }
  return acc;
}

// Adds g * d|x - t| / dx to gx and to acc (the caller negates acc for t).
template <typename T>
inline void gradient(const T* __restrict__ x, const T* __restrict__ t, T g, T* __restrict__ gx,
                     T* __restrict__ acc, int64_t h) {
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    T u = x[i] - t[i], v = x[i + h] - t[i + h];
    T m = std::sqrt(u * u + v * v);
    T f = g / (m > 0 ? m : T(1));  // selects, not branches: vectorised without masks
    f = m > 0 ? f : T(0);
    T fu = f * u, fv = f * v;
    gx[i] += fu;
    gx[i + h] += fv;
    acc[i] += fu;
    acc[i + h] += fv;
  }
}

void check(const at::Tensor& query, const at::Tensor& table, const at::Tensor& ids) {
  TORCH_CHECK(query.device().is_cpu() && table.device().is_cpu() && ids.device().is_cpu(),
              "the native RotatE kernels take CPU tensors");
  TORCH_CHECK(query.dim() == 2 && table.dim() == 2 && query.size(1) == table.size(1) &&
                  query.size(1) % 2 == 0,
              "query (B, 2d) and table (E, 2d) must share an even width");
  TORCH_CHECK(query.scalar_type() == table.scalar_type() &&
                  (query.scalar_type() == at::kFloat || query.scalar_type() == at::kDouble),
              "query and table must both be float32 or both float64");
  TORCH_CHECK(query.is_contiguous() && table.is_contiguous() && ids.is_contiguous(),
              "the native RotatE kernels take contiguous tensors");
  TORCH_CHECK(ids.scalar_type() == at::kLong, "ids must be int64");
  TORCH_CHECK(ids.dim() == 1 || (ids.dim() == 2 && ids.size(0) == query.size(0)),
              "ids must be (B, C) or (C,)");
}

int64_t grain(int64_t pairs, int64_t h, int64_t entities) {
  return pairs * h < kSerialWork ? entities + 1 : 1;
}

template <typename T>
void forward_kernel(const T* q, const T* t, const Groups& g, bool shared, int64_t rows, int64_t cols,
                    int64_t h, T* out) {
  const int64_t w = 2 * h;
  at::parallel_for(0, g.span(), grain(rows * cols, h, g.span()), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const T* row = t + (g.base + e) * w;
      for (int64_t j = g.start[e]; j < g.start[e + 1]; ++j) {
        const int64_t p = g.entry[j];
        if (shared) {
          for (int64_t b = 0; b < rows; ++b) out[b * cols + p] = distance(q + b * w, row, h);
        } else {
          out[p] = distance(q + (p / cols) * w, row, h);
        }
      }
    }
  });
}

// grad_query_parts: (threads, rows, 2h) zeros, or null (no query gradient); grad_table:
// (num_entities, 2h), zeros outside the ids' range (every row of it written), or null (no table gradient).
template <typename T>
void backward_kernel(const T* q, const T* t, const T* grad, const Groups& g, bool shared, int64_t rows,
                     int64_t cols, int64_t h, int64_t threads, T* grad_query_parts, T* grad_table) {
  const int64_t w = 2 * h;
  at::parallel_for(0, g.span(), grain(rows * cols, h, g.span()), [&](int64_t e0, int64_t e1) {
    const int64_t tid = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(tid < threads, "thread ", tid, " of ", threads);
    std::vector<T> acc(w), sink(grad_query_parts ? 0 : w);
    // Without a query gradient, every query's terms go to one row that is never read.
    T* gq = grad_query_parts ? grad_query_parts + tid * rows * w : sink.data();
    const int64_t qstride = grad_query_parts ? w : 0;
    for (int64_t e = e0; e < e1; ++e) {
      const T* row = t + (g.base + e) * w;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t j = g.start[e]; j < g.start[e + 1]; ++j) {
        const int64_t p = g.entry[j];
        if (shared) {
          for (int64_t b = 0; b < rows; ++b)
            gradient(q + b * w, row, grad[b * cols + p], gq + b * qstride, acc.data(), h);
        } else {
          const int64_t b = p / cols;
          gradient(q + b * w, row, grad[p], gq + b * qstride, acc.data(), h);
        }
      }
      if (grad_table != nullptr) {
        T* out = grad_table + (g.base + e) * w;
        const T* a = acc.data();
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) out[i] = T(0) - a[i];
      }
    }
  });
}

at::Tensor rotate_forward(const at::Tensor& query, const at::Tensor& table, const at::Tensor& ids) {
  check(query, table, ids);
  const bool shared = ids.dim() == 1;
  const int64_t rows = query.size(0), cols = ids.size(-1), h = query.size(1) / 2;
  const int64_t num_entities = table.size(0);
  at::Tensor out = at::empty({rows, cols}, query.options());
  if (out.numel() == 0) return out;
  const Groups g = group_by_entity(ids, num_entities);
  if (query.scalar_type() == at::kFloat) {
    forward_kernel(query.data_ptr<float>(), table.data_ptr<float>(), g, shared, rows, cols, h,
                   out.data_ptr<float>());
  } else {
    forward_kernel(query.data_ptr<double>(), table.data_ptr<double>(), g, shared, rows, cols, h,
                   out.data_ptr<double>());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> rotate_backward(const at::Tensor& grad, const at::Tensor& query,
                                                   const at::Tensor& table, const at::Tensor& ids,
                                                   bool need_query, bool need_table) {
  check(query, table, ids);
  const bool shared = ids.dim() == 1;
  const int64_t rows = query.size(0), cols = ids.size(-1), w = query.size(1), h = w / 2;
  const int64_t num_entities = table.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == rows && grad.size(1) == cols && grad.is_contiguous() &&
                  grad.scalar_type() == query.scalar_type(),
              "grad must be a contiguous (B, C) tensor of the query's dtype");
  const int64_t threads = at::get_num_threads();
  at::Tensor parts = at::zeros({need_query ? threads : 0, rows, w}, query.options());
  at::Tensor grad_table = at::empty({0}, table.options());
  if (need_query || need_table) {
    const Groups g = group_by_entity(ids, num_entities);
    if (need_table) {  // the kernel writes the rows of the ids' range; the others are zero
      const bool covered = g.base == 0 && g.span() == num_entities;
      grad_table = covered ? at::empty({num_entities, w}, table.options()) : at::zeros({num_entities, w}, table.options());
    }
    if (query.scalar_type() == at::kFloat) {
      backward_kernel(query.data_ptr<float>(), table.data_ptr<float>(), grad.data_ptr<float>(), g, shared, rows,
                      cols, h, threads, need_query ? parts.data_ptr<float>() : nullptr,
                      need_table ? grad_table.data_ptr<float>() : nullptr);
    } else {
      backward_kernel(query.data_ptr<double>(), table.data_ptr<double>(), grad.data_ptr<double>(), g, shared,
                      rows, cols, h, threads, need_query ? parts.data_ptr<double>() : nullptr,
                      need_table ? grad_table.data_ptr<double>() : nullptr);
    }
  }
  if (!need_query) return {at::empty({0}, query.options()), grad_table};
  return {threads == 1 ? parts[0] : parts.sum(0), grad_table};
}

// --- row updates of the sparse optimizers (lightning_kge.optim) ----------------------------------
//
// A sparse gradient is given as entries (ids[j], values[order[j]]) with ids sorted ascending, so
// the entries of one row are adjacent (order may be empty: entry j is values row j). Each row's
// entries are summed into g (the coalesced gradient, in the order of the entries), then the row and
// its state are updated in one pass, row by row, with no temporary larger than one row. Rows are
// split among torch's intra-op threads; each row belongs to one thread.

std::vector<int64_t> segment_starts(const int64_t* id, int64_t n) {
  std::vector<int64_t> start;
  start.reserve(n + 1);
  for (int64_t j = 0; j < n; ++j)
    if (j == 0 || id[j] != id[j - 1]) start.push_back(j);
  start.push_back(n);
  return start;
}

void check_rows(const at::Tensor& param, const std::vector<at::Tensor>& state, const at::Tensor& ids,
                const at::Tensor& order, const at::Tensor& values) {
  TORCH_CHECK(param.device().is_cpu() && param.dim() == 2 && param.is_contiguous() &&
                  (param.scalar_type() == at::kFloat || param.scalar_type() == at::kDouble),
              "row updates take a contiguous (E, w) float32 or float64 CPU parameter");
  for (const at::Tensor& s : state)
    TORCH_CHECK(s.device().is_cpu() && s.sizes() == param.sizes() && s.is_contiguous() &&
                    s.scalar_type() == param.scalar_type(),
                "the optimizer state must be contiguous and shaped and typed like the parameter");
  TORCH_CHECK(ids.device().is_cpu() && ids.dim() == 1 && ids.is_contiguous() && ids.scalar_type() == at::kLong,
              "ids must be a contiguous int64 CPU vector");
  TORCH_CHECK(order.numel() == 0 || (order.dim() == 1 && order.numel() == ids.numel() && order.is_contiguous() &&
                                     order.scalar_type() == at::kLong),
              "order must be empty or a contiguous int64 vector as long as ids");
  TORCH_CHECK(values.dim() == 2 && values.size(1) == param.size(1) && values.is_contiguous() &&
                  values.scalar_type() == param.scalar_type() &&
                  (order.numel() > 0 || values.size(0) == ids.numel()),
              "values must be contiguous (n, w) rows of the parameter's dtype, one per entry without order");
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t j = 0; j < ids.numel(); ++j) {
    TORCH_CHECK_INDEX(id[j] >= 0 && id[j] < param.size(0), "row id ", id[j], " lies outside [0, ", param.size(0), ")");
    TORCH_CHECK(j == 0 || id[j - 1] <= id[j], "row ids must be sorted");
  }
  if (order.numel() > 0) {
    const int64_t* o = order.data_ptr<int64_t>();
    for (int64_t j = 0; j < order.numel(); ++j)
      TORCH_CHECK_INDEX(o[j] >= 0 && o[j] < values.size(0), "order entry ", o[j], " lies outside the values");
  }
}

constexpr int64_t kPrefetchRows = 8;  // rows ahead whose table and state lines are requested early

// Requests the w values at p (one row) into the cache ahead of use: rows lie far apart in a large
// table, so without it each row waits for memory in turn.
template <typename T>
inline void prefetch_row(const T* p, int64_t w) {
  constexpr int64_t line = 64 / sizeof(T);
  for (int64_t i = 0; i < w; i += line) __builtin_prefetch(p + i, 1, 0);
}

// Calls update(row, g, ahead) with each row's summed gradient g (w values) and the row kPrefetchRows
// segments ahead (-1 near the end, to prefetch), rows split among threads.
template <typename T, typename F>
void for_each_row(const at::Tensor& ids, const at::Tensor& order, const at::Tensor& values, F update) {
  const int64_t n = ids.numel(), w = values.size(1);
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* o = order.numel() > 0 ? order.data_ptr<int64_t>() : nullptr;
  const T* v = values.data_ptr<T>();
  const std::vector<int64_t> start = segment_starts(id, n);
  const int64_t segments = static_cast<int64_t>(start.size()) - 1;
  at::parallel_for(0, segments, segments * w < kSerialWork ? segments + 1 : 64, [&](int64_t s0, int64_t s1) {
    std::vector<T> g(w);
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t ahead = s + kPrefetchRows < s1 ? id[start[s + kPrefetchRows]] : -1;
      const int64_t first = start[s], end = start[s + 1];
      const T* x = v + (o ? o[first] : first) * w;
      std::copy(x, x + w, g.begin());
      for (int64_t j = first + 1; j < end; ++j) {
        const T* y = v + (o ? o[j] : j) * w;
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) g[i] += y[i];
      }
      update(id[first], g.data(), ahead);
    }
  });
}

// Lazy Adam (torch.optim.SparseAdam's maths) on the rows of a sparse gradient:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= step_size m / (sqrt(v) + eps)
template <typename T>
void adam_kernel(at::Tensor& param, at::Tensor& exp_avg, at::Tensor& exp_avg_sq, const at::Tensor& ids,
                 const at::Tensor& order, const at::Tensor& values, double beta1, double beta2, T eps,
                 T step_size) {
  const T w1 = static_cast<T>(1.0 - beta1), b2 = static_cast<T>(beta2), w2 = static_cast<T>(1.0 - beta2);
  const int64_t w = param.size(1);
  T* p = param.data_ptr<T>();
  T* m = exp_avg.data_ptr<T>();
  T* s = exp_avg_sq.data_ptr<T>();
  for_each_row<T>(ids, order, values, [&](int64_t row, const T* g, int64_t ahead) {
    if (ahead >= 0) {
      prefetch_row(p + ahead * w, w);
      prefetch_row(m + ahead * w, w);
      prefetch_row(s + ahead * w, w);
    }
    T* pr = p + row * w;
    T* mr = m + row * w;
    T* sr = s + row * w;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const T mi = mr[i] + w1 * (g[i] - mr[i]);  // lerp, as torch's Adam
      const T si = sr[i] * b2 + w2 * g[i] * g[i];
      mr[i] = mi;
      sr[i] = si;
      pr[i] -= step_size * (mi / (std::sqrt(si) + eps));
    }
  });
}

// Adagrad on the rows of a sparse gradient:  s += g^2;  p -= lr g / (sqrt(s) + eps)
template <typename T>
void adagrad_kernel(at::Tensor& param, at::Tensor& sum, const at::Tensor& ids, const at::Tensor& order,
                    const at::Tensor& values, T lr, T eps) {
  const int64_t w = param.size(1);
  T* p = param.data_ptr<T>();
  T* s = sum.data_ptr<T>();
  for_each_row<T>(ids, order, values, [&](int64_t row, const T* g, int64_t ahead) {
    if (ahead >= 0) {
      prefetch_row(p + ahead * w, w);
      prefetch_row(s + ahead * w, w);
    }
    T* pr = p + row * w;
    T* sr = s + row * w;
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) {
      const T si = sr[i] + g[i] * g[i];
      sr[i] = si;
      pr[i] -= lr * (g[i] / (std::sqrt(si) + eps));
    }
  });
}

void adam_rows(at::Tensor param, at::Tensor exp_avg, at::Tensor exp_avg_sq, const at::Tensor& ids,
               const at::Tensor& order, const at::Tensor& values, double beta1, double beta2, double eps,
               double step_size) {
  check_rows(param, {exp_avg, exp_avg_sq}, ids, order, values);
  if (param.scalar_type() == at::kFloat) {
    adam_kernel<float>(param, exp_avg, exp_avg_sq, ids, order, values, beta1, beta2, eps, step_size);
  } else {
    adam_kernel<double>(param, exp_avg, exp_avg_sq, ids, order, values, beta1, beta2, eps, step_size);
  }
}

void adagrad_rows(at::Tensor param, at::Tensor sum, const at::Tensor& ids, const at::Tensor& order,
                  const at::Tensor& values, double lr, double eps) {
  check_rows(param, {sum}, ids, order, values);
  if (param.scalar_type() == at::kFloat) {
    adagrad_kernel<float>(param, sum, ids, order, values, lr, eps);
  } else {
    adagrad_kernel<double>(param, sum, ids, order, values, lr, eps);
  }
}

}  // namespace

TORCH_LIBRARY(lightning_kge_native, m) {
  m.def("rotate_forward(Tensor query, Tensor table, Tensor ids) -> Tensor");
  m.def(
      "rotate_backward(Tensor grad, Tensor query, Tensor table, Tensor ids, bool need_query, "
      "bool need_table) -> (Tensor, Tensor)");
  m.def(
      "adam_rows(Tensor(a!) param, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, Tensor ids, Tensor order, "
      "Tensor values, float beta1, float beta2, float eps, float step_size) -> ()");
  m.def(
      "adagrad_rows(Tensor(a!) param, Tensor(b!) sum, Tensor ids, Tensor order, Tensor values, float lr, "
      "float eps) -> ()");
}

TORCH_LIBRARY_IMPL(lightning_kge_native, CPU, m) {
  m.impl("rotate_forward", &rotate_forward);
  m.impl("rotate_backward", &rotate_backward);
  m.impl("adam_rows", &adam_rows);
  m.impl("adagrad_rows", &adagrad_rows);
}
