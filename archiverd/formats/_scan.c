/* archiverd.formats._scan: docker json-file lines read in one compiled pass, for the
 * sealer's count and restore's merge index; and restore's merge itself.
 *
 * The daemon's hottest loop. `archiverd.formats.docker.count_closing` answers the same
 * question with six to eight `bytes.count` passes (about 2 ms per MB); this reads each line
 * once, with memchr (about 0.1 ms per MB), and releases the GIL while it does. It is
 * optional: built where a C compiler is (setup.py), else the passes are used.
 *
 * docker_closing(data) -> int | None
 *   How many lines of `data` (whole lines, ending in "\n") close an application line, when
 *   every line is a record in dockerd's layout ending in a UTC time, read exactly as
 *   `archiverd.formats.docker.read` reads one:
 *
 *     {"log":"<text>","stream":"<name>",[...]"time":"<...>Z"}
 *
 *   - it starts with {"log":" ;
 *   - its first "," "stream":" (searched from the line's start, as `read` does) has a
 *     "time":" somewhere after it, and the line ends in Z"} (so that time's closing quote
 *     is there);
 *   - it closes when its text ends in the escape \n: an odd run of backslashes, then "n".
 *   Otherwise None: a line needs `read`.
 *
 * docker_keys(data, floor) -> bytes | None
 *   Restore's merge keys of `data` (whole lines) when every line is one message as
 *   `archiverd.restore.records` reads the usual dockerd record: a closing record ending in
 *   ","stream":"stdout|stderr","time":"YYYY-MM-DDTHH:MM:SS.fffffffffZ"} with a real
 *   calendar time (`archiverd.formats.timestamps`). Each key is the greatest time up to
 *   its line, and at least `floor`, as native int64s (an `array("q")`'s bytes). None when a
 *   line is not such a record or a time does not fit in int64 nanoseconds (above its least
 *   value, which restore's index keeps for "no time").
 *
 * cri_closing(data) -> int | None
 *   How many lines of `data` (whole lines) close an application line (tag F), when every
 *   one is a CRI record as `archiverd.formats.cri.read` reads one, with a UTC time:
 *   YYYY-MM-DDTHH:MM:SS[.1-9 digits]Z (a real calendar time), a space, stdout or stderr, a
 *   space, P or F, then a space or the line's end. Otherwise None.
 *
 * line_ends(data) -> bytes
 *   Where each line of `data` ends (after its "\n"; a last line without one ends at the
 *   end), as native int64s: how restore's merge finds a block's records without a bytes
 *   object per record.
 *
 * merge_runs(runs) -> bytes
 *   Restore's merge of runs of records (`archiverd.restore.records.write_blocks`), each
 *   ``(data, keys, ends, start, stop)``: records start to stop-1, record i being
 *   data[ends[i-1]:ends[i]] (the first from 0), keys and ends native int64s. Each run's keys
 *   never decrease; the records come out ordered by key, ties in run order and within a
 *   run in its order: a stable sort of the runs concatenated, done as a merge. ValueError
 *   when a run breaks those rules (bounds, ends or keys out of order).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h> /* memchr, memmem (Python.h defines _GNU_SOURCE) */

#define PREFIX "{\"log\":\""
#define PREFIX_LEN 8
#define STREAM "\",\"stream\":\""
#define STREAM_LEN 12
#define STDOUT_TIME "stdout\",\"time\":\""
#define STDERR_TIME "stderr\",\"time\":\""
#define STD_TIME_LEN 16
#define TIME "\"time\":\""
#define TIME_LEN 8
#define END "Z\"}"
#define END_LEN 3

/* The first "," "stream":" in [p, end), or NULL: quotes are rare in log text (escaped), so
 * memchr to each quote and compare there. */
static const char *
first_stream(const char *p, const char *end)
{
    while ((p = memchr(p, '"', (size_t)(end - p))) != NULL) {
        if (end - p >= STREAM_LEN && memcmp(p, STREAM, STREAM_LEN) == 0) {
            return p;
        }
        p++;
    }
    return NULL;
}

/* Whether the text [text, end) ends in the escape \n (not an escaped backslash and "n"). */
static int
ends_in_newline(const char *text, const char *end)
{
    if (end - text < 2 || end[-1] != 'n' || end[-2] != '\\') {
        return 0;
    }
    const char *q = end - 2;
    while (q > text && q[-1] == '\\') {
        q--;
    }
    return (end - 1 - q) % 2 == 1;
}

/* The line [p, eol): 1 a record that closes an application line, 0 one that does not (a
 * partial record), -1 none in dockerd's layout ending in a UTC time. Its first stream key
 * goes to *stream. */
static int
closing_record(const char *p, const char *eol, const char **stream)
{
    if (eol - p < PREFIX_LEN + END_LEN || memcmp(p, PREFIX, PREFIX_LEN) != 0
        || memcmp(eol - END_LEN, END, END_LEN) != 0) {
        return -1;
    }
    const char *s = first_stream(p, eol);
    if (s == NULL) {
        return -1;
    }
    *stream = s;
    const char *t = s + STREAM_LEN;
    /* the usual stream and time key right after the log; else any time key after it */
    if (!(eol - t >= STD_TIME_LEN
          && (memcmp(t, STDOUT_TIME, STD_TIME_LEN) == 0
              || memcmp(t, STDERR_TIME, STD_TIME_LEN) == 0))
        && memmem(s + 1, (size_t)(eol - s - 1), TIME, TIME_LEN) == NULL) {
        return -1;
    }
    return ends_in_newline(p + PREFIX_LEN, s);
}

/* `n` ASCII digits at `s` as a number in *out; 0 if one is no digit. */
static int
read_digits(const char *s, int n, long long *out)
{
    long long value = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        value = value * 10 + (s[i] - '0');
    }
    *out = value;
    return 1;
}

/* Days from 1970-01-01 to the proleptic Gregorian date y-m-d (Howard Hinnant's
 * days_from_civil). */
static long long
days_from_civil(long long y, long long m, long long d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The calendar time YYYY-MM-DDTHH:MM:SS at `s` (19 bytes) in seconds since the epoch, in
 * *seconds; 0 if it is none `archiverd.formats.timestamps` reads: a real day (year 1 on),
 * hour <= 23, minute <= 59, second <= 60 (a leap second). */
static int
civil_seconds(const char *s, long long *seconds)
{
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    long long y, mo, d, h, mi, sec;
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':'
        || !read_digits(s, 4, &y) || !read_digits(s + 5, 2, &mo) || !read_digits(s + 8, 2, &d)
        || !read_digits(s + 11, 2, &h) || !read_digits(s + 14, 2, &mi)
        || !read_digits(s + 17, 2, &sec)) {
        return 0;
    }
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1
        || d > month_days[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 || sec > 60) {
        return 0;
    }
    *seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    return 1;
}

/* The UTC time YYYY-MM-DDTHH:MM:SS.fffffffff at `s` (29 bytes) in ns since the epoch, in
 * *ns; 0 if it is no time `archiverd.formats.timestamps` parses or does not fit in int64. */
static int
utc_ns(const char *s, long long *ns)
{
    long long seconds, frac, whole;
    if (s[19] != '.' || !read_digits(s + 20, 9, &frac) || !civil_seconds(s, &seconds)) {
        return 0;
    }
    /* int64's least value is restore's index mark for "no time" */
    return !__builtin_mul_overflow(seconds, 1000000000LL, &whole)
           && !__builtin_add_overflow(whole, frac, ns) && *ns != LLONG_MIN;
}

#define TAIL_TIME_LEN 29 /* YYYY-MM-DDTHH:MM:SS.fffffffff */

/* The time of the line [p, eol) in *ns when it is one usual closing record (see
 * docker_keys); 0 if not. */
static int
usual_time(const char *p, const char *eol, long long *ns)
{
    const char *stream;
    if (closing_record(p, eol, &stream) != 1) {
        return 0;
    }
    const char *t = stream + STREAM_LEN;
    if (eol - t != STD_TIME_LEN + TAIL_TIME_LEN + END_LEN
        || (memcmp(t, STDOUT_TIME, STD_TIME_LEN) != 0
            && memcmp(t, STDERR_TIME, STD_TIME_LEN) != 0)) {
        return 0;
    }
    return utc_ns(t + STD_TIME_LEN, ns);
}

/* How many "\n" there are in [p, end). */
static Py_ssize_t
newlines(const char *p, const char *end)
{
    Py_ssize_t count = 0;
    for (; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
        count++;
    }
    return count;
}

static PyObject *
docker_keys(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "docker_keys() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    long long key = PyLong_AsLongLong(args[1]);
    if (key == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const char *p = view.buf;
    const char *end = p + view.len;
    Py_ssize_t lines = newlines(p, end);
    PyObject *keys = NULL;
    if (view.len > 0 && end[-1] == '\n') {
        keys = PyBytes_FromStringAndSize(NULL, lines * (Py_ssize_t)sizeof(long long));
    }
    if (keys == NULL) {
        PyBuffer_Release(&view);
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    long long *out = (long long *)PyBytes_AS_STRING(keys);
    long long *out_end = out + lines;
    int usual = 1;
    Py_BEGIN_ALLOW_THREADS
    for (; p < end; p++, out++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        long long ns;
        /* (a line more, or none where there was one: a buffer changed while read) */
        if (eol == NULL || out == out_end || !usual_time(p, eol, &ns)) {
            usual = 0;
            break;
        }
        key = ns > key ? ns : key;
        *out = key;
        p = eol;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (!usual) {
        Py_DECREF(keys);
        Py_RETURN_NONE;
    }
    return keys;
}

/* How many lines of `arg` (whole lines) `classify` reads as closing an application line
 * (1), when it reads each as a record (1 or 0); else None. */
static PyObject *
count_closing(PyObject *arg, int (*classify)(const char *, const char *))
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const char *p = view.buf;
    const char *end = p + view.len;
    Py_ssize_t closing = 0;
    int record = view.len > 0 && end[-1] == '\n' ? 0 : -1;
    Py_BEGIN_ALLOW_THREADS
    while (record >= 0 && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) { /* the buffer changed while read */
            record = -1;
            break;
        }
        record = classify(p, eol);
        closing += record;
        p = eol + 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (record < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSsize_t(closing);
}

static int
docker_record(const char *p, const char *eol)
{
    const char *stream;
    return closing_record(p, eol, &stream);
}

static PyObject *
docker_closing(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return count_closing(arg, docker_record);
}

/* The CRI line [p, eol): 1 a record that closes an application line (tag F), 0 one that
 * does not (P), -1 none with a UTC time (see cri_closing). */
static int
cri_record(const char *p, const char *eol)
{
    long long seconds;
    if (eol - p < 19 + 2 + 6 + 2 || !civil_seconds(p, &seconds)) {
        return -1;
    }
    const char *q = p + 19;
    if (*q == '.') { /* a fraction of 1 to 9 digits */
        const char *digits = ++q;
        while (q < eol && q - digits < 10 && *q >= '0' && *q <= '9') {
            q++;
        }
        if (q == digits || q - digits > 9) {
            return -1;
        }
    }
    /* Z, a space, the stream, a space, the tag, then a space or the line's end */
    if (eol - q < 1 + 1 + 6 + 1 + 1 || q[0] != 'Z' || q[1] != ' '
        || (memcmp(q + 2, "stdout ", 7) != 0 && memcmp(q + 2, "stderr ", 7) != 0)
        || (q[9] != 'F' && q[9] != 'P') || (q + 10 < eol && q[10] != ' ')) {
        return -1;
    }
    return q[9] == 'F';
}

static PyObject *
cri_closing(PyObject *Py_UNUSED(module), PyObject *arg)
{
    return count_closing(arg, cri_record);
}

/* line_ends(data): see the top of this file. */
static PyObject *
line_ends(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const char *start = view.buf;
    const char *end = start + view.len;
    Py_ssize_t lines = newlines(start, end);
    if (view.len > 0 && end[-1] != '\n') {
        lines++; /* a last line without its newline */
    }
    PyObject *ends = PyBytes_FromStringAndSize(NULL, lines * (Py_ssize_t)sizeof(long long));
    if (ends == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long long *out = (long long *)PyBytes_AS_STRING(ends);
    long long *out_end = out + lines;
    Py_BEGIN_ALLOW_THREADS
    for (const char *p = start; p < end && out < out_end; out++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        p = eol == NULL ? end : eol + 1;
        *out = (long long)(p - start);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (out != out_end) {
        Py_DECREF(ends);
        PyErr_SetString(PyExc_BufferError, "line_ends: the data changed while it was read");
        return NULL;
    }
    return ends;
}

/* One run of merge_runs: its buffers, and its next record (pos) up to stop. */
typedef struct {
    Py_buffer data, keys, ends;
    const long long *key, *end;
    Py_ssize_t pos, stop;
} Run;

/* Whether run a's next record sorts before run b's (by key, ties to the earlier run). */
static int
sorts_before(const Run *runs, int a, int b)
{
    long long ka = runs[a].key[runs[a].pos], kb = runs[b].key[runs[b].pos];
    return ka < kb || (ka == kb && a < b);
}

/* Restore the heap order of heap[0..n) below `at`. */
static void
sift_down(const Run *runs, int *heap, int n, int at)
{
    for (;;) {
        int least = at, left = 2 * at + 1, right = left + 1;
        if (left < n && sorts_before(runs, heap[left], heap[least])) {
            least = left;
        }
        if (right < n && sorts_before(runs, heap[right], heap[least])) {
            least = right;
        }
        if (least == at) {
            return;
        }
        int swap = heap[at];
        heap[at] = heap[least];
        heap[least] = swap;
        at = least;
    }
}

/* Where run's record i starts in its data. */
static long long
record_start(const Run *run, Py_ssize_t i)
{
    return i == 0 ? 0 : run->end[i - 1];
}

/* Release `run`'s buffers (those not taken are zeroed: releasing them does nothing). */
static void
close_run(Run *run)
{
    PyBuffer_Release(&run->data);
    PyBuffer_Release(&run->keys);
    PyBuffer_Release(&run->ends);
}

/* Take the buffers and bounds of `item` into `run` (zeroed); check it as merge_runs says (-1 and an
 * exception when it breaks a rule); add its bytes to *total. */
static int
open_run(PyObject *item, Py_ssize_t number, Run *run, long long *total)
{
    PyObject *data, *keys, *ends;
    if (!PyArg_ParseTuple(item, "OOOnn;a run is (data, keys, ends, start, stop)", &data, &keys,
                          &ends, &run->pos, &run->stop)) {
        return -1;
    }
    if (PyObject_GetBuffer(data, &run->data, PyBUF_SIMPLE) < 0
        || PyObject_GetBuffer(keys, &run->keys, PyBUF_SIMPLE) < 0
        || PyObject_GetBuffer(ends, &run->ends, PyBUF_SIMPLE) < 0) {
        close_run(run);
        return -1;
    }
    run->key = run->keys.buf;
    run->end = run->ends.buf;
    Py_ssize_t count = run->keys.len / (Py_ssize_t)sizeof(long long);
    Py_ssize_t bounds = run->ends.len / (Py_ssize_t)sizeof(long long);
    const char *broken = NULL;
    if (run->pos < 0 || run->pos > run->stop || run->stop > count || run->stop > bounds) {
        broken = "its start and stop are not records of it";
    }
    if (broken == NULL && record_start(run, run->pos) < 0) {
        broken = "its ends are out of order or past its data";
    }
    for (Py_ssize_t i = run->pos; broken == NULL && i < run->stop; i++) {
        if (run->end[i] < record_start(run, i) || run->end[i] > run->data.len) {
            broken = "its ends are out of order or past its data";
        }
        else if (i > run->pos && run->key[i] < run->key[i - 1]) {
            broken = "its keys decrease";
        }
    }
    if (broken != NULL) {
        PyErr_Format(PyExc_ValueError, "merge_runs: run %zd: %s", number, broken);
        close_run(run);
        return -1;
    }
    if (run->stop > run->pos) {
        *total += run->end[run->stop - 1] - record_start(run, run->pos);
    }
    return 0;
}

/* merge_runs(runs): see the top of this file. */
static PyObject *
merge_runs(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *items = PySequence_Fast(arg, "merge_runs() takes a sequence of runs");
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    if (n > INT_MAX) {
        Py_DECREF(items);
        return PyErr_Format(PyExc_ValueError, "merge_runs: %zd runs are too many", n);
    }
    Run *runs = PyMem_Calloc((size_t)n + 1, sizeof(Run));
    int *heap = PyMem_Calloc((size_t)n + 1, sizeof(int));
    PyObject *merged = NULL;
    Py_ssize_t opened = 0;
    long long total = 0;
    if (runs == NULL || heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; opened < n; opened++) {
        if (open_run(PySequence_Fast_GET_ITEM(items, opened), opened, &runs[opened], &total)
            < 0) {
            goto done;
        }
    }
    merged = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (merged == NULL) {
        goto done;
    }
    char *out = PyBytes_AS_STRING(merged);
    /* The GIL stays held: the keys and ends (arrays) were checked above, and no other thread
     * may change them before they are used (nothing else runs during restore's merge). */
    int live = 0;
    for (int r = 0; r < (int)n; r++) {
        if (runs[r].pos < runs[r].stop) {
            heap[live++] = r;
        }
    }
    for (int at = live / 2 - 1; at >= 0; at--) {
        sift_down(runs, heap, live, at);
    }
    while (live > 0) {
        int r = heap[0];
        Run *run = &runs[r];
        Py_ssize_t i = run->pos + 1; /* its next record sorts first: take it, and those after
                                        it that still sort before the runner-up's */
        if (live == 1) {
            i = run->stop;
        }
        else {
            int next = heap[1];
            if (live > 2 && sorts_before(runs, heap[2], next)) {
                next = heap[2];
            }
            long long limit = runs[next].key[runs[next].pos];
            while (i < run->stop && (run->key[i] < limit || (run->key[i] == limit && r < next))) {
                i++;
            }
        }
        long long from = record_start(run, run->pos);
        memcpy(out, (const char *)run->data.buf + from, (size_t)(run->end[i - 1] - from));
        out += run->end[i - 1] - from;
        run->pos = i;
        if (i == run->stop) {
            heap[0] = heap[--live];
        }
        sift_down(runs, heap, live, 0);
    }
done:
    for (Py_ssize_t r = 0; r < opened; r++) {
        close_run(&runs[r]);
    }
    PyMem_Free(runs);
    PyMem_Free(heap);
    Py_DECREF(items);
    return merged;
}

static PyMethodDef methods[] = {
    {"docker_closing", docker_closing, METH_O,
     "docker_closing(data, /)\n--\n\n"
     "How many lines of `data` close an application line, when every one is a json-file\n"
     "record in dockerd's layout ending in a UTC time; else None."},
    {"docker_keys", (PyCFunction)(void (*)(void))docker_keys, METH_FASTCALL,
     "docker_keys(data, floor, /)\n--\n\n"
     "Restore's merge keys of `data` (int64 bytes) when every line is a usual dockerd\n"
     "record closing its line; else None."},
    {"cri_closing", cri_closing, METH_O,
     "cri_closing(data, /)\n--\n\n"
     "How many lines of `data` close an application line (F), when every one is a CRI\n"
     "record with a UTC time; else None."},
    {"line_ends", line_ends, METH_O,
     "line_ends(data, /)\n--\n\n"
     "Where each line of `data` ends, as int64 bytes (a last line without newline too)."},
    {"merge_runs", merge_runs, METH_O,
     "merge_runs(runs, /)\n--\n\n"
     "Runs of (data, keys, ends, start, stop) merged by key, ties in run order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "archiverd.formats._scan",
    .m_doc = "Log lines read, and restore's runs merged, in compiled passes (see _scan.c).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    return PyModuleDef_Init(&module);
}
