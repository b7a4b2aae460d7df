// nanobind module tqsearch._core: type mapping, GIL release and error mapping only.
// Python validates inputs and allocates outputs; C++ re-checks cheap invariants.
#include <chrono>
#include <cstdlib>  // defines __GLIBC__ on glibc
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <string>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "codec.h"
#include "exact.h"
#include "flat.h"
#include "hnsw.h"
#include "lloyd.h"
#include "multivector.h"
#include "queries.h"
#include "common.h"
#include "random.h"
#include "relevance.h"
#include "rotation.h"
#include "rowfile.h"
#include "rwlock.h"
#include "simd/dispatch.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Every array parameter is strict: C-contiguous, on the CPU, of the stated dtype and rank, and passed
// with noconvert() (arr() below). Otherwise nanobind copies a mismatched array into a temporary, which
// silently casts inputs and loses whatever the call writes into an output buffer.
template <class T, class Shape = nb::shape<-1, -1>>
using In = nb::ndarray<const T, Shape, nb::c_contig, nb::device::cpu>;
template <class T, class Shape = nb::shape<-1, -1>>
using Out = nb::ndarray<T, Shape, nb::c_contig, nb::device::cpu>;
using Vec = nb::shape<-1>;
using Bitset = std::optional<In<uint64_t, Vec>>;

constexpr auto arr(const char* name) { return nb::arg(name).noconvert(); }

constexpr int kMaxThreads = 1024;

const tq::Kernels* pick(const std::string& simd) { return simd.empty() ? tq::default_kernels() : tq::kernels_for(simd); }

// The interpreter's main thread, the only one that runs Python signal handlers (set at import).
unsigned long main_thread_ident = 0;

// Runs fn without the GIL; Ctrl-C pending at a chunk boundary stops it and re-raises KeyboardInterrupt.
// Only the main thread polls: elsewhere PyErr_CheckSignals does nothing, and re-taking the GIL at every
// chunk would make a search on a worker thread (a server's) queue behind the threads holding it.
template <class F>
void without_gil(F&& fn) {
  bool interrupted = false;
  const bool on_main = PyThread_get_thread_ident() == main_thread_ident;
  {
    nb::gil_scoped_release release;
    tq::InterruptCheck check;
    if (on_main) {
      check = [] {
        nb::gil_scoped_acquire acquire;
        return PyErr_CheckSignals() != 0;
      };
    }
    try {
      fn(check);
    } catch (const tq::Interrupted&) {
      interrupted = true;
    }
  }
  if (interrupted) throw nb::python_error();
}

// ------------------------------------------------------------------ argument checks (-> ValueError)

std::string str(size_t v) { return std::to_string(v); }

void check_rows(size_t got, size_t want, const char* what) {
  TQ_CHECK(got == want, std::string(what) + " has " + str(got) + " rows, expected " + str(want));
}

void check_cols(size_t got, size_t want, const char* what) {
  TQ_CHECK(got == want, std::string(what) + " has " + str(got) + " columns, expected " + str(want));
}

template <class A>
void check_shape(const A& a, size_t rows, size_t cols, const char* what) {
  TQ_CHECK(a.shape(0) == rows && a.shape(1) == cols, std::string(what) + " has shape (" + str(a.shape(0)) + ", " +
                                                         str(a.shape(1)) + "), expected (" + str(rows) + ", " +
                                                         str(cols) + ")");
}

void check_threads(int threads) {
  TQ_CHECK(threads >= 0 && threads <= kMaxThreads,
           "threads must be in 0..1024 (0: all cores), got " + std::to_string(threads));
}

// A metric name of exact re-ranking (exact.h).
tq::ExactMetric exact_metric(const std::string& metric) {
  if (metric == "ip") return tq::ExactMetric::kIp;
  if (metric == "cosine") return tq::ExactMetric::kCosine;
  TQ_CHECK(metric == "l2", "metric must be 'ip', 'cosine' or 'l2', got " + metric);
  return tq::ExactMetric::kL2;
}

void check_bits(int bits) { TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8, got " + std::to_string(bits)); }

// A search's k: results per query, at most the number of stored slots.
void check_k(size_t k, size_t size) {
  TQ_CHECK(k <= size, "k must not exceed the number of stored vectors (" + str(size) + "), got " + str(k));
}

// An optional filter over `size` slots: one bit per slot, 64 per word.
const uint64_t* bitset_of(const Bitset& allowed, size_t size) {
  if (!allowed) return nullptr;
  TQ_CHECK(allowed->shape(0) >= (size + 63) / 64, "allowed bitset has " + str(allowed->shape(0)) +
                                                      " words, expected at least " + str((size + 63) / 64));
  return allowed->data();
}

// Slot indices that index a store of `size` slots.
void check_slots(const In<int64_t, Vec>& slots, size_t size) {
  for (size_t i = 0; i < slots.shape(0); ++i)
    TQ_CHECK(slots(i) >= 0 && size_t(slots(i)) < size,
             "slots[" + str(i) + "] = " + std::to_string(slots(i)) + " is out of range for " + str(size) + " slots");
}

std::vector<float> to_vector(const In<float, Vec>& a) { return std::vector<float>(a.data(), a.data() + a.shape(0)); }

// A numpy array of the given shape (the elements of v, row-major) that owns v.
template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::vector<T> v, std::initializer_list<size_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(heap->data(), shape, owner);
}

template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::vector<T> v) {
  const size_t n = v.size();
  return owned_array(std::move(v), {n});
}

nb::ndarray<nb::numpy, float> to_numpy(std::vector<float> v) { return owned_array(std::move(v)); }
nb::ndarray<nb::numpy, uint8_t> to_numpy_u8(std::vector<uint8_t> v) { return owned_array(std::move(v)); }
nb::ndarray<nb::numpy, uint32_t> to_numpy_u32(std::vector<uint32_t> v) { return owned_array(std::move(v)); }

// The per-slot score factor a of a store of `size` slots for the given slots, read by at(slot).
template <class At>
nb::ndarray<nb::numpy, float> a_of(const In<int64_t, Vec>& slots, size_t size, At&& at) {
  check_slots(slots, size);
  std::vector<float> out(slots.shape(0));
  for (size_t i = 0; i < out.size(); ++i) out[i] = at(size_t(slots(i)));
  return to_numpy(std::move(out));
}

// packed_rows(slots, out) of a store: out is (len(slots), row_bytes).
template <class Store>
void packed_rows(const Store& s, const In<int64_t, Vec>& slots, Out<uint8_t>& out) {
  check_shape(out, slots.shape(0), s.row_bytes(), "output buffer");
  check_slots(slots, s.size());
  s.packed_rows(slots.data(), slots.shape(0), out.data());
}

// A 2-D array whose rows are contiguous but may lie further apart (a column slice of a wider array).
template <class T>
using Strided = nb::ndarray<T, nb::shape<-1, -1>, nb::device::cpu>;

template <class T>
tq::Rows<T> rows_of(const Strided<T>& a, const char* what) {
  const size_t rows = a.shape(0), cols = a.shape(1);
  const int64_t stride = rows > 1 ? a.stride(0) : int64_t(cols);
  TQ_CHECK((cols <= 1 || a.stride(1) == 1) && stride >= int64_t(cols),
           std::string(what) + " must have contiguous rows in increasing memory order");
  return {a.data(), rows, cols, size_t(stride)};
}

// The two sides of a ReadWriteLock as context managers (src/tqsearch/_rwlock.py): stateless, as the lock keeps each
// thread's holds, so one object per side serves every `with`.
struct ReadSide {
  tq::ReadWriteLock* lock;
};
struct WriteSide {
  tq::ReadWriteLock* lock;
};

// Waits for a side of the lock with wait(timeout) -> taken, without the GIL, polling for Ctrl-C every kLockPoll;
// on KeyboardInterrupt (or another exception from a signal handler) it calls give_up first.
template <class Wait, class GiveUp>
void wait_for_side(Wait&& wait, GiveUp&& give_up) {
  constexpr std::chrono::milliseconds kLockPoll{50};
  for (;;) {
    bool taken;
    {
      nb::gil_scoped_release release;
      taken = wait(kLockPoll);
    }
    if (taken) return;
    if (PyErr_CheckSignals() != 0) {
      give_up();
      throw nb::python_error();
    }
  }
}

// A side's class: made from the lock (kept alive by it), entered by enter(lock), left by leave(lock).
template <class Side, class Enter, class Leave>
void bind_side(nb::module_& m, const char* name, Enter enter, Leave leave) {
  nb::class_<Side>(m, name)
      .def(
          "__init__", [](Side* self, tq::ReadWriteLock* lock) { new (self) Side{lock}; }, "lock"_a,
          nb::keep_alive<1, 2>())
      .def("__enter__", [enter](Side& s) { enter(*s.lock); })
      .def(
          "__exit__", [leave](Side& s, nb::handle, nb::handle, nb::handle) { leave(*s.lock); }, "exc_type"_a.none(),
          "exc"_a.none(), "traceback"_a.none());
}

void bind_lock(nb::module_& m) {
  nb::class_<tq::ReadWriteLock>(m, "ReadWriteLock").def(nb::init<>());
  bind_side<ReadSide>(
      m, "ReadSide",
      [](tq::ReadWriteLock& l) {
        if (!l.try_read()) wait_for_side([&](std::chrono::milliseconds w) { return l.wait_read(w); }, [] {});
      },
      [](tq::ReadWriteLock& l) { l.release_read(); });
  bind_side<WriteSide>(
      m, "WriteSide",
      [](tq::ReadWriteLock& l) {
        if (!l.try_write())
          wait_for_side([&](std::chrono::milliseconds w) { return l.wait_write(w); }, [&] { l.cancel_write(); });
      },
      [](tq::ReadWriteLock& l) { l.release_write(); });
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "tqsearch native kernels (rotation, TurboQuant codec, scan)";
  main_thread_ident = nb::cast<unsigned long>(nb::module_::import_("threading").attr("main_thread")().attr("ident"));
  m.attr("__version__") = TQSEARCH_VERSION;
  m.def("available_simd_levels", &tq::available_simd_levels);
  m.def("cpu_features", &tq::cpu_features);
  m.def("default_simd_level", [] { return std::string(tq::default_kernels()->name); });
  m.def("random_signs", [](uint64_t seed, size_t n) { return to_numpy(tq::random_signs(seed, n)); }, "seed"_a, "n"_a);
  m.def("random_gaussian", [](uint64_t seed, size_t n) { return to_numpy(tq::random_gaussian(seed, n)); }, "seed"_a,
        "n"_a);
  m.def("derive_seed", &tq::derive_seed, "seed"_a, "purpose"_a);
  bind_lock(m);

  nb::class_<tq::Rotation>(m, "Rotation")
      .def_static("fht_kac", &tq::Rotation::fht_kac, "dim"_a, "seed"_a, "steps"_a)
      .def_static(
          "dense",
          [](const In<float>& mat) {
            TQ_CHECK(mat.shape(0) == mat.shape(1), "dense rotation matrix must be square");
            return tq::Rotation::dense(mat.shape(0), std::vector<float>(mat.data(), mat.data() + mat.size()));
          },
          arr("matrix"))
      .def_prop_ro("dim", &tq::Rotation::dim)
      .def_prop_ro("steps", &tq::Rotation::steps);

  nb::enum_<tq::ScaleMode>(m, "ScaleMode")
      .value("none", tq::ScaleMode::None)
      .value("unbiased", tq::ScaleMode::Unbiased)
      .value("lsq", tq::ScaleMode::Lsq);

  nb::class_<tq::MSECodec>(m, "MSECodec")
      .def(
          "__init__",
          [](tq::MSECodec* self, const tq::Rotation& rot, int bits, const In<float, Vec>& centroids,
             const std::string& simd, int angle_steps) {
            new (self) tq::MSECodec(rot, bits, to_vector(centroids), pick(simd), angle_steps);
          },
          "rotation"_a, "bits"_a, arr("centroids"), "simd"_a = "", "angle_steps"_a = 0)
      .def_prop_ro("dim", &tq::MSECodec::dim)
      .def_prop_ro("bits", &tq::MSECodec::bits)
      .def_prop_ro("row_bytes", &tq::MSECodec::row_bytes)
      .def_prop_ro("simd_level", [](const tq::MSECodec& c) { return std::string(c.kernels().name); })
      .def(
          "encode",
          [](const tq::MSECodec& c, const In<float>& x, tq::ScaleMode mode, Out<uint8_t>& codes,
             Out<float, Vec>& norms, Out<float, Vec>& scales, int threads) {
            const size_t n = x.shape(0);
            check_cols(x.shape(1), c.dim(), "x");
            check_shape(codes, n, c.row_bytes(), "codes buffer");
            check_rows(norms.shape(0), n, "norms buffer");
            check_rows(scales.shape(0), n, "scales buffer");
            check_threads(threads);
            int64_t bad = -1;
            without_gil([&](const tq::InterruptCheck& chk) {
              bad = c.encode(x.data(), n, mode, codes.data(), norms.data(), scales.data(), threads, chk);
            });
            return bad;
          },
          arr("x"), "mode"_a, arr("codes"), arr("norms"), arr("scales"), "threads"_a)
      .def(
          "decode",
          [](const tq::MSECodec& c, const In<uint8_t>& codes, const In<float, Vec>& norms,
             const In<float, Vec>& scales, Out<float>& out, int threads) {
            const size_t n = codes.shape(0);
            check_cols(codes.shape(1), c.row_bytes(), "codes");
            check_rows(norms.shape(0), n, "norms");
            check_rows(scales.shape(0), n, "scales");
            check_shape(out, n, c.dim(), "output buffer");
            check_threads(threads);
            without_gil([&](const tq::InterruptCheck& chk) {
              c.decode(codes.data(), norms.data(), scales.data(), n, out.data(), threads, chk);
            });
          },
          arr("codes"), arr("norms"), arr("scales"), arr("out"), "threads"_a);

  m.def(
      "rotate",
      [](const tq::Rotation& r, const In<float>& x, bool inverse, Out<float>& out, int threads, const std::string& simd) {
        const size_t n = x.shape(0);
        check_cols(x.shape(1), r.dim(), "x");
        check_shape(out, n, r.dim(), "output buffer");
        check_threads(threads);
        const tq::Kernels* k = pick(simd);
        without_gil([&](const tq::InterruptCheck& chk) {
          tq::rotate_rows(r, *k, x.data(), n, inverse, out.data(), threads, chk);
        });
      },
      "rotation"_a, arr("x"), "inverse"_a, arr("out"), "threads"_a, "simd"_a = "");
  m.def(
      "prepare_queries",
      [](const In<float>& q, const In<float, Vec>& mean, const std::string& metric, const tq::Rotation* rotation,
         Out<float>& out, Out<float, Vec>& constant, int threads) {
        const size_t nq = q.shape(0), dim = q.shape(1);
        check_rows(mean.shape(0), dim, "mean");
        if (rotation) check_cols(dim, rotation->dim(), "queries");
        check_shape(out, nq, dim, "output buffer");
        check_rows(constant.shape(0), nq, "constant buffer");
        check_threads(threads);
        const tq::ExactMetric m = exact_metric(metric);
        int64_t bad = -1;
        without_gil([&](const tq::InterruptCheck& chk) {
          bad = tq::prepare_queries(*tq::default_kernels(), m, q.data(), nq, dim, mean.data(), rotation, out.data(),
                                    constant.data(), threads, chk);
        });
        return bad;
      },
      arr("queries"), arr("mean"), "metric"_a, "rotation"_a.none(), arr("out"), arr("constant"), "threads"_a);
  m.def(
      "finish_hits",
      [](Out<float>& scores, const In<int64_t>& slots, const std::optional<In<float, Vec>>& constant,
         const In<int64_t, Vec>& ids, bool clamp, Out<int64_t>& found) {
        const size_t nq = scores.shape(0), width = scores.shape(1);
        check_shape(slots, nq, width, "slots");
        check_shape(found, nq, width, "found buffer");
        if (constant) check_rows(constant->shape(0), nq, "constant");
        tq::finish_hits(scores.data(), slots.data(), nq, width, constant ? constant->data() : nullptr, ids.data(),
                        ids.shape(0), clamp, found.data());
      },
      arr("scores"), arr("slots"), arr("constant").none(), arr("ids"), "clamp"_a, arr("found"));
  m.def(
      "scan_ip",
      [](const In<float>& queries, const In<uint8_t>& codes, int bits, const In<float, Vec>& centroids,
         const In<float, Vec>& factors, Out<float>& out, int threads, const std::string& simd) {
        const size_t nq = queries.shape(0), n = codes.shape(0), dim = queries.shape(1);
        check_bits(bits);
        check_rows(centroids.shape(0), size_t(1) << bits, "centroids");
        check_cols(codes.shape(1), tq::packed_row_bytes(dim, bits), "codes");
        check_rows(factors.shape(0), n, "factors");
        check_shape(out, nq, n, "output buffer");
        check_threads(threads);
        const tq::Kernels* k = pick(simd);
        without_gil([&](const tq::InterruptCheck& chk) {
          tq::scan_ip(*k, queries.data(), nq, codes.data(), n, dim, bits, centroids.data(), factors.data(), out.data(),
                      n, threads, chk);
        });
      },
      arr("queries"), arr("codes"), "bits"_a, arr("centroids"), arr("factors"), arr("out"), "threads"_a,
      "simd"_a = "");

  // codebooks.py's Lloyd-Max iteration (tq::lloyd), bit-identical to its numpy form; returns the centroids (float64).
  m.def(
      "lloyd",
      [](const In<double, Vec>& edges, const In<double, Vec>& mass, const In<double, Vec>& cum_p,
         const In<double, Vec>& cum_m, const In<double, Vec>& start, int max_iter, double tol) {
        const size_t n = mass.shape(0);
        check_rows(edges.shape(0), n + 1, "edges");
        check_rows(cum_p.shape(0), n + 1, "cum_p");
        check_rows(cum_m.shape(0), n + 1, "cum_m");
        TQ_CHECK(n > 0, "the law needs at least one cell");
        std::vector<double> t(start.data(), start.data() + start.shape(0)), out;
        without_gil([&](const tq::InterruptCheck&) {
          out = tq::lloyd(edges.data(), mass.data(), cum_p.data(), cum_m.data(), n, std::move(t), max_iter, tol);
        });
        return owned_array(std::move(out));
      },
      arr("edges"), arr("mass"), arr("cum_p"), arr("cum_m"), arr("start"), "max_iter"_a, "tol"_a);
  m.def("set_thread_bytes", &tq::set_thread_bytes, "bytes"_a);  // a flat scan's work per thread (tests lower it)

  // Returns the C heap's free pages to the OS (glibc malloc_trim). A large add leaves its temporaries
  // (encode buffers, rotated copies) free in the heap, where the long-lived arrays allocated beside them
  // keep glibc from trimming them: RSS would stay well above what the index holds. No-op elsewhere.
  m.def("trim_heap", [] {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
  });

  // Reads rows[i] (sorted, distinct row numbers) of a file of fixed-size rows into out[i] without the GIL
  // (tq::read_rows): a collection's re-ranking reads its original vectors so.
  m.def(
      "pread_rows",
      [](int fd, const In<int64_t, Vec>& rows, Out<uint8_t>& out) {
        const size_t n = rows.shape(0), width = out.shape(1);
        TQ_CHECK(out.shape(0) == n, "out must have one row per row number");
        const int64_t* r = rows.data();
        for (size_t i = 0; i < n; ++i)
          TQ_CHECK(r[i] >= 0 && (i == 0 || r[i] > r[i - 1]), "row numbers must be sorted, distinct and >= 0");
        size_t failed;
        {
          nb::gil_scoped_release unlocked;
          failed = tq::read_rows(fd, r, n, width, out.data());
        }
        TQ_CHECK(failed == n, "could not read row " + std::to_string(failed < n ? r[failed] : -1) +
                                  " (file shorter than the rows asked for)");
      },
      "fd"_a, arr("rows"), arr("out"));

  // A filter over slots from a boolean mask over ids (Kernels::mask_bits); returns the allowed count.
  m.def(
      "bitset_from_mask",
      [](const In<int64_t, Vec>& ids, const In<uint8_t, Vec>& mask, Out<uint64_t, Vec>& words,
         const std::string& simd) {
        const size_t n = ids.shape(0);
        TQ_CHECK(words.shape(0) >= (n + 63) / 64, "words holds " + str(words.shape(0)) + " words, expected at least " +
                                                      str((n + 63) / 64));
        const tq::Kernels* k = pick(simd);
        nb::gil_scoped_release unlocked;
        return k->mask_bits(ids.data(), n, mask.data(), mask.shape(0), words.data());
      },
      arr("ids"), arr("mask"), arr("words"), "simd"_a = "");

  // Exact re-ranking on original vectors (exact.h): the scores of rows against one query, and the best
  // `top` of each query's candidate rows read from a file of fixed-width rows (GIL released).
  m.def(
      "exact_scores",
      [](const std::string& metric, const In<float, Vec>& query, const In<float>& rows, Out<float, Vec>& out) {
        check_cols(rows.shape(1), query.shape(0), "rows");
        check_rows(out.shape(0), rows.shape(0), "out");
        const tq::ExactMetric m = exact_metric(metric);
        nb::gil_scoped_release unlocked;
        tq::exact_scores(*tq::default_kernels(), m, query.data(), rows.data(), rows.shape(0),
                         query.shape(0), out.data());
      },
      "metric"_a, arr("query"), arr("rows"), arr("out"));
  m.def(
      "exact_top_file",
      [](int fd, const std::string& format, const std::string& metric, const In<float>& queries,
         const In<int64_t>& cands, Out<float>& scores, Out<int64_t>& ids) {
        const size_t nq = queries.shape(0), top = scores.shape(1);
        TQ_CHECK(format == "float32" || format == "float16", "format must be 'float32' or 'float16', got " + format);
        check_rows(cands.shape(0), nq, "cands");
        check_rows(scores.shape(0), nq, "scores");
        check_shape(ids, nq, top, "ids");
        const auto kind = format == "float32" ? tq::RowFormat::kFloat32 : tq::RowFormat::kFloat16;
        const tq::ExactMetric m = exact_metric(metric);
        int64_t failed;
        {
          nb::gil_scoped_release unlocked;
          failed = tq::exact_top_file(*tq::default_kernels(), m, fd, kind, queries.data(), nq,
                                      queries.shape(1), cands.data(), cands.shape(1), top, scores.data(), ids.data());
        }
        TQ_CHECK(failed < 0,
                 "could not read row " + std::to_string(failed) + " (file shorter than the rows asked for)");
      },
      "fd"_a, "format"_a, "metric"_a, arr("queries"), arr("cands"), arr("scores"), arr("ids"));

  // Reads byte ranges of a file into out as '[' r0 ',' r1 ... ']' (tq::read_joined) without the GIL: a
  // collection's records, one JSON text to parse.
  m.def(
      "pread_joined",
      [](int fd, const In<uint64_t, Vec>& offsets, const In<uint32_t, Vec>& lengths, Out<uint8_t, Vec>& out) {
        const size_t n = offsets.shape(0);
        check_rows(lengths.shape(0), n, "lengths");
        TQ_CHECK(n >= 1, "pread_joined needs at least one range");
        size_t want = n + 1;
        for (size_t i = 0; i < n; ++i) want += lengths.data()[i];
        check_rows(out.shape(0), want, "out");
        size_t failed;
        {
          nb::gil_scoped_release unlocked;
          failed = tq::read_joined(fd, offsets.data(), lengths.data(), n, out.data());
        }
        TQ_CHECK(failed == n, "could not read range " + str(failed) + " (file shorter than the ranges asked for)");
      },
      "fd"_a, arr("offsets"), arr("lengths"), arr("out"));

  nb::class_<tq::FlatStore>(m, "FlatStore")
      .def(
          "__init__",
          [](tq::FlatStore* self, size_t dim, int bits, const In<float, Vec>& centroids, const std::string& simd) {
            new (self) tq::FlatStore(dim, bits, to_vector(centroids), pick(simd));
          },
          "dim"_a, "bits"_a, arr("centroids"), "simd"_a = "")
      .def_prop_ro("size", &tq::FlatStore::size)
      .def(
          "a_of",
          [](const tq::FlatStore& st, const In<int64_t, Vec>& slots) {
            return a_of(slots, st.size(), [&](size_t slot) { return st.a_at(slot); });
          },
          arr("slots"))
      .def_prop_ro("code_size", &tq::FlatStore::code_size)
      .def_prop_ro("lut_layout", &tq::FlatStore::lut_layout)
      .def_prop_ro("lut_codes", &tq::FlatStore::lut_codes)
      .def_prop_ro("memory_bytes", &tq::FlatStore::memory_bytes)
      .def("reserve", &tq::FlatStore::reserve, "n"_a)
      .def(
          "append",
          [](tq::FlatStore& s, const In<uint8_t>& packed, const In<float, Vec>& a, const In<float, Vec>& b) {
            const size_t n = packed.shape(0);
            check_cols(packed.shape(1), s.row_bytes(), "packed");
            check_rows(a.shape(0), n, "a");
            check_rows(b.shape(0), n, "b");
            s.append(packed.data(), a.data(), b.data(), n);
          },
          arr("packed"), arr("a"), arr("b"))
      .def("move", &tq::FlatStore::move, "src"_a, "dst"_a)
      .def("truncate", &tq::FlatStore::truncate, "n"_a)
      .def("packed_rows", &packed_rows<tq::FlatStore>, arr("slots"), arr("out"))
      .def(
          "search",
          [](const tq::FlatStore& s, const In<float>& queries, size_t k, const Bitset& allowed, Out<float>& scores,
             Out<int64_t>& slots, int threads) {
            const size_t nq = queries.shape(0);
            check_cols(queries.shape(1), s.dim(), "queries");
            check_k(k, s.size());
            check_shape(scores, nq, k, "scores buffer");
            check_shape(slots, nq, k, "slots buffer");
            check_threads(threads);
            const uint64_t* bits = bitset_of(allowed, s.size());
            without_gil([&](const tq::InterruptCheck& chk) {
              s.search(queries.data(), nq, k, bits, scores.data(), slots.data(), threads, chk);
            });
          },
          arr("queries"), "k"_a, arr("allowed").none(), arr("scores"), arr("slots"), "threads"_a)
      .def(
          // prepare_queries, search and finish_hits in one call, for a FlatIndex search without filter, rerank or
          // tiers: (first NaN/Inf row or -1, scores (nq, k), ids (nq, k)). A one-query search of SIFT5k spent ~2 us
          // of its ~9.5 in the three calls' arguments and buffers.
          "search_queries",
          [](const tq::FlatStore& s, const In<float>& queries, const In<float, Vec>& mean, const std::string& metric,
             const tq::Rotation& rotation, size_t k, const In<int64_t, Vec>& ids, int threads) {
            const size_t nq = queries.shape(0), dim = s.dim();
            check_cols(queries.shape(1), dim, "queries");
            check_rows(mean.shape(0), dim, "mean");
            check_cols(rotation.dim(), dim, "rotation");
            check_k(k, s.size());
            TQ_CHECK(ids.shape(0) >= s.size(), "ids has " + str(ids.shape(0)) + " rows, expected at least " +
                                                   str(s.size()));
            check_threads(threads);
            const tq::ExactMetric m = exact_metric(metric);
            std::vector<float> rotated(nq * dim), constant(nq), scores(nq * k);
            std::vector<int64_t> slots(nq * k), found(nq * k);
            int64_t bad = -1;
            without_gil([&](const tq::InterruptCheck& chk) {
              bad = tq::prepare_queries(*tq::default_kernels(), m, queries.data(), nq, dim, mean.data(), &rotation,
                                        rotated.data(), constant.data(), threads, chk);
              if (bad >= 0) return;
              s.search(rotated.data(), nq, k, nullptr, scores.data(), slots.data(), threads, chk);
              tq::finish_hits(scores.data(), slots.data(), nq, k, constant.data(), ids.data(), s.size(),
                              m == tq::ExactMetric::kCosine, found.data());
            });
            return nb::make_tuple(bad, owned_array(std::move(scores), {nq, k}),
                                  owned_array(std::move(found), {nq, k}));
          },
          arr("queries"), arr("mean"), "metric"_a, "rotation"_a, "k"_a, arr("ids"), "threads"_a)
      .def("codes", [](const tq::FlatStore& s) { return to_numpy_u8(s.codes()); })
      .def("a", [](const tq::FlatStore& s) { return to_numpy(s.a()); })
      .def("b", [](const tq::FlatStore& s) { return to_numpy(s.b()); })
      .def_prop_ro("attached", &tq::FlatStore::attached)
      .def(
          "attach",  // zero-copy: the caller keeps the arrays alive (FlatIndex holds them)
          [](tq::FlatStore& s, const In<uint8_t, Vec>& codes, const In<float, Vec>& a, const In<float, Vec>& b,
             size_t n) {
            check_rows(a.shape(0), n, "a");
            check_rows(b.shape(0), n, "b");
            s.attach(codes.data(), codes.shape(0), a.data(), b.data(), n);
          },
          arr("codes"), arr("a"), arr("b"), "n"_a);

  m.def(
      "tiered_search",
      [](const std::vector<const tq::FlatStore*>& tiers, const std::vector<In<float>>& queries, size_t k,
         const Bitset& allowed, Out<float>& scores, Out<int64_t>& slots, int threads) {
        TQ_CHECK(!tiers.empty() && queries.size() == tiers.size(), "one query array per tier is needed");
        const size_t nq = queries[0].shape(0), n = tiers[0]->size();
        std::vector<const float*> rows;
        for (size_t t = 0; t < tiers.size(); ++t) {
          check_shape(queries[t], nq, tiers[t]->dim(), "tier queries");
          TQ_CHECK(tiers[t]->size() == n, "tiers hold different numbers of vectors");
          rows.push_back(queries[t].data());
        }
        check_k(k, n);
        check_shape(scores, nq, k, "scores buffer");
        check_shape(slots, nq, k, "slots buffer");
        check_threads(threads);
        const uint64_t* bits = bitset_of(allowed, n);
        without_gil([&](const tq::InterruptCheck& chk) {
          tq::tiered_search(tiers, rows, nq, k, bits, scores.data(), slots.data(), threads, chk);
        });
      },
      "tiers"_a, "queries"_a, "k"_a, arr("allowed").none(), arr("scores"), arr("slots"), "threads"_a);

  nb::class_<tq::HnswGraph>(m, "HnswGraph")
      .def(
          "__init__",
          [](tq::HnswGraph* self, const std::vector<size_t>& dims, const std::vector<int>& bits,
             const std::vector<In<float, Vec>>& centroids, size_t M, size_t ef_construction, uint64_t seed,
             float decode_div, const std::string& simd) {
            TQ_CHECK(!dims.empty() && bits.size() == dims.size() && centroids.size() == dims.size(),
                     "one dim, bit width and codebook per tier is needed");
            std::vector<tq::CodeTier> tiers;
            for (size_t t = 0; t < dims.size(); ++t) tiers.push_back({dims[t], bits[t], to_vector(centroids[t])});
            new (self) tq::HnswGraph(tiers, M, ef_construction, seed, decode_div, pick(simd));
          },
          "dims"_a, "bits"_a, "centroids"_a, "M"_a, "ef_construction"_a, "seed"_a, "decode_div"_a, "simd"_a = "")
      .def_prop_ro("size", &tq::HnswGraph::size)
      .def_prop_ro("tiers", &tq::HnswGraph::tiers)
      .def_prop_ro("row_bytes", &tq::HnswGraph::row_bytes)
      .def(
          "a_of",
          [](const tq::HnswGraph& g, const In<int64_t, Vec>& slots, size_t tier) {
            TQ_CHECK(tier < g.tiers(), "tier " + str(tier) + " is out of range for " + str(g.tiers()) + " tiers");
            return a_of(slots, g.size(), [&](size_t slot) { return g.a_at(slot, tier); });
          },
          arr("slots"), "tier"_a = 0)
      .def_prop_ro("entry", &tq::HnswGraph::entry)
      .def_prop_ro("max_level", &tq::HnswGraph::max_level)
      .def_prop_ro("memory_bytes", &tq::HnswGraph::memory_bytes)
      .def("reserve", &tq::HnswGraph::reserve, "n"_a)
      .def(
          "deleted",
          [](const tq::HnswGraph& g, size_t slot) {
            TQ_CHECK(slot < g.size(), "slot " + str(slot) + " is out of range for " + str(g.size()) + " slots");
            return g.deleted(slot);
          },
          "slot"_a)
      .def(
          "add",
          [](tq::HnswGraph& g, const In<float>& rotated, const In<uint8_t>& packed, const In<float, Vec>& a,
             const In<float, Vec>& b, const In<int64_t, Vec>& slots, int threads) {
            const size_t n = packed.shape(0);
            check_cols(packed.shape(1), g.row_bytes(), "packed");
            check_shape(rotated, n, g.dim(), "rotated");
            check_rows(a.shape(0), n * g.tiers(), "a (one per row and tier)");
            check_rows(b.shape(0), n, "b");
            check_rows(slots.shape(0), n, "slots");
            check_threads(threads);
            without_gil([&](const tq::InterruptCheck& chk) {
              g.add(rotated.data(), packed.data(), a.data(), b.data(), slots.data(), n, threads, chk);
            });
          },
          arr("rotated"), arr("packed"), arr("a"), arr("b"), arr("slots"), "threads"_a)
      .def("remove", &tq::HnswGraph::remove, "slot"_a)
      .def(
          "search",
          [](const tq::HnswGraph& g, const In<float>& queries, size_t k, size_t ef, const Bitset& allowed,
             size_t candidates, Out<float>& scores, Out<int64_t>& slots, int threads) {
            const size_t nq = queries.shape(0);
            check_cols(queries.shape(1), g.dim(), "queries");
            check_k(k, g.size());
            check_shape(scores, nq, k, "scores buffer");
            check_shape(slots, nq, k, "slots buffer");
            TQ_CHECK(candidates <= g.size(), "candidates must not exceed the number of stored vectors (" +
                                                 str(g.size()) + "), got " + str(candidates));
            check_threads(threads);
            const uint64_t* bits = bitset_of(allowed, g.size());
            without_gil([&](const tq::InterruptCheck& chk) {
              g.search(queries.data(), nq, k, ef, bits, candidates, scores.data(), slots.data(), threads, chk);
            });
          },
          arr("queries"), "k"_a, "ef"_a, arr("allowed").none(), "candidates"_a, arr("scores"), arr("slots"),
          "threads"_a)
      .def("packed_rows", &packed_rows<tq::HnswGraph>, arr("slots"), arr("out"))
      .def("arrays",
           [](const tq::HnswGraph& g) {
             nb::dict d;
             d["codes"] = to_numpy_u8(g.codes());
             d["a"] = to_numpy(g.a());
             d["b"] = to_numpy(g.b());
             d["levels"] = to_numpy_u8(g.levels());
             d["deleted"] = to_numpy_u8(g.deleted_flags());
             d["level0"] = to_numpy_u32(g.level0());
             d["upper"] = to_numpy_u32(g.upper());
             return d;
           })
      .def(
          "restore",
          [](tq::HnswGraph& g, const In<uint8_t, Vec>& codes, const In<float, Vec>& a, const In<float, Vec>& b,
             const In<uint8_t, Vec>& levels, const In<uint8_t, Vec>& deleted, const In<uint32_t, Vec>& level0,
             const In<uint32_t, Vec>& upper, size_t n, int64_t entry, int max_level) {
            TQ_CHECK(codes.shape(0) == n * g.row_bytes() && a.shape(0) == n * g.tiers() && b.shape(0) == n &&
                         levels.shape(0) == n && deleted.shape(0) == n &&
                         level0.shape(0) == n * (g.max_links0() + 1),
                     "stored graph arrays have inconsistent sizes");
            g.restore(codes.data(), a.data(), b.data(), levels.data(), deleted.data(), level0.data(), upper.data(),
                      upper.shape(0), n, entry, max_level);
          },
          arr("codes"), arr("a"), arr("b"), arr("levels"), arr("deleted"), arr("level0"), arr("upper"), "n"_a,
          "entry"_a, "max_level"_a);

  m.def(
      "fde_aggregate",
      [](const In<float>& proj, const In<uint32_t>& buckets, const In<int64_t, Vec>& offsets, size_t buckets_per_rep,
         size_t width, bool average, bool fill, bool normalize, Out<float>& out, int threads) {
        TQ_CHECK(offsets.shape(0) >= 1, "offsets must hold at least one entry (0)");
        const size_t sets = offsets.shape(0) - 1, reps = buckets.shape(1);
        TQ_CHECK(offsets(0) == 0 && offsets(sets) >= 0 && size_t(offsets(sets)) == proj.shape(0),
                 "offsets must run from 0 to the number of tokens");
        check_rows(buckets.shape(0), proj.shape(0), "buckets");
        TQ_CHECK(buckets_per_rep >= 1 && buckets_per_rep <= (size_t(1) << 32), "buckets_per_rep must be in 1..2^32");
        TQ_CHECK(width >= 1, "width must be >= 1");
        size_t dim = 0;
        TQ_CHECK(!__builtin_mul_overflow(reps, buckets_per_rep, &dim) && !__builtin_mul_overflow(dim, width, &dim),
                 "the FDE dimension (reps * buckets_per_rep * width) is too large");
        const tq::FdeShape shape{reps, buckets_per_rep, width};
        check_shape(out, sets, shape.dim(), "output buffer");
        check_threads(threads);
        without_gil([&](const tq::InterruptCheck& chk) {
          tq::fde_aggregate(proj.data(), proj.shape(1), buckets.data(), offsets.data(), sets, shape, average, fill,
                            normalize, out.data(), threads, chk);
        });
      },
      arr("proj"), arr("buckets"), arr("offsets"), "buckets_per_rep"_a, "width"_a, "average"_a, "fill"_a,
      "normalize"_a, arr("out"), "threads"_a);
  m.def(
      "count_sketch",
      [](const In<float>& in, const In<uint32_t, Vec>& slot, const In<float, Vec>& sign, Out<float>& out) {
        check_rows(slot.shape(0), in.shape(1), "slot");
        check_rows(sign.shape(0), in.shape(1), "sign");
        check_rows(out.shape(0), in.shape(0), "output buffer");
        nb::gil_scoped_release release;
        tq::count_sketch(in.data(), in.shape(0), in.shape(1), slot.data(), sign.data(), out.shape(1), out.data());
      },
      arr("x"), arr("slot"), arr("sign"), arr("out"));

  nb::class_<tq::ChamferScorer>(m, "ChamferScorer")
      .def(
          "__init__",
          [](tq::ChamferScorer* self, size_t dim, int bits, const In<float, Vec>& centroids, const std::string& simd) {
            new (self) tq::ChamferScorer(dim, bits, to_vector(centroids), pick(simd));
          },
          "dim"_a, "bits"_a, arr("centroids"), "simd"_a = "")
      .def(
          "score",
          [](const tq::ChamferScorer& s, const In<uint8_t>& codes, const In<float, Vec>& a,
             const In<int64_t, Vec>& starts, const In<int64_t, Vec>& counts, const In<float>& queries,
             const In<int64_t, Vec>& qoff, const In<int64_t>& cand, Out<float>& scores, int threads) {
            const size_t nq = cand.shape(0), c = cand.shape(1);
            check_cols(codes.shape(1), s.row_bytes(), "codes");
            check_rows(a.shape(0), codes.shape(0), "a");
            check_rows(counts.shape(0), starts.shape(0), "counts");
            check_cols(queries.shape(1), s.dim(), "queries");
            TQ_CHECK(qoff.shape(0) == nq + 1 && qoff(0) == 0 && qoff(nq) >= 0 && size_t(qoff(nq)) == queries.shape(0),
                     "query offsets must run from 0 to the number of query tokens, one more than the candidate rows");
            check_shape(scores, nq, c, "scores buffer");
            check_threads(threads);
            const tq::TokenRows rows{codes.data(), a.data(), codes.shape(0), starts.data(), counts.data(),
                                     starts.shape(0)};
            without_gil([&](const tq::InterruptCheck& chk) {
              s.score(rows, queries.data(), qoff.data(), nq, cand.data(), c, scores.data(), threads, chk);
            });
          },
          arr("codes"), arr("a"), arr("starts"), arr("counts"), arr("queries"), arr("qoff"), arr("cand"),
          arr("scores"), "threads"_a);

  // Relevance of search hits, and with min_relevance > 0 the hits below it masked in place
  // (tq::relevance; relevance.py validates the weights). Returns the relevance, float32 (rows, cols).
  m.def(
      "relevance",
      [](const Strided<const float>& tail, const std::optional<In<float>>& queries,
         const std::optional<In<double, Vec>>& query_weights, double bias, double score, double tail_mean, double top,
         float min_relevance, const Strided<float>& scores, const std::optional<Strided<int64_t>>& ids) {
        const auto s = rows_of(scores, "scores");
        check_rows(tail.shape(0), s.rows, "tail scores");
        tq::Rows<int64_t> id{nullptr, s.rows, s.cols, 0};
        if (ids) {
          id = rows_of(*ids, "ids");
          check_shape(*ids, s.rows, s.cols, "ids");
        }
        tq::Rows<const float> q{nullptr, s.rows, 0, 0};
        if (query_weights) {
          TQ_CHECK(queries.has_value(), "this relevance model reads the queries: pass them");
          check_rows(queries->shape(0), s.rows, "queries");
          check_cols(queries->shape(1), query_weights->shape(0), "queries (the relevance model's query weights)");
          q = {queries->data(), s.rows, queries->shape(1), queries->shape(1)};
        }
        const tq::RelevanceWeights w{bias, score, tail_mean, top, query_weights ? query_weights->data() : nullptr};
        auto* rel = new std::vector<float>(s.rows * s.cols);
        nb::capsule owner(rel, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
        tq::relevance(rows_of(tail, "tail scores"), q, w, min_relevance, s, id, rel->data());
        return nb::ndarray<nb::numpy, float, nb::ndim<2>>(rel->data(), {s.rows, s.cols}, owner);
      },
      arr("tail"), arr("queries").none(), arr("query_weights").none(), "bias"_a, "score"_a, "tail_mean"_a, "top"_a,
      "min_relevance"_a, arr("scores"), arr("ids").none());

  m.def(
      "unpack",
      [](const In<uint8_t>& codes, size_t dim, int bits, Out<uint8_t>& out) {
        const size_t n = codes.shape(0);
        check_bits(bits);
        check_cols(codes.shape(1), tq::packed_row_bytes(dim, bits), "codes");
        check_shape(out, n, dim, "output buffer");
        const tq::Kernels* k = tq::default_kernels();
        for (size_t i = 0; i < n; ++i) k->unpack(codes.data() + i * codes.shape(1), dim, bits, out.data() + i * dim);
      },
      arr("codes"), "dim"_a, "bits"_a, arr("out"));
}
