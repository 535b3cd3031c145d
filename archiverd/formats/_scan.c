/* archiverd.formats._scan: docker json-file chunks counted in one pass.
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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
 * partial record), -1 none in dockerd's layout ending in a UTC time. */
static int
closing_record(const char *p, const char *eol)
{
    if (eol - p < PREFIX_LEN + END_LEN || memcmp(p, PREFIX, PREFIX_LEN) != 0
        || memcmp(eol - END_LEN, END, END_LEN) != 0) {
        return -1;
    }
    const char *s = first_stream(p, eol);
    if (s == NULL) {
        return -1;
    }
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

static PyObject *
docker_closing(PyObject *Py_UNUSED(module), PyObject *arg)
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
        record = closing_record(p, eol);
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

static PyMethodDef methods[] = {
    {"docker_closing", docker_closing, METH_O,
     "docker_closing(data, /)\n--\n\n"
     "How many lines of `data` close an application line, when every one is a json-file\n"
     "record in dockerd's layout ending in a UTC time; else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "archiverd.formats._scan",
    .m_doc = "Docker json-file chunks counted in one pass (see _scan.c).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    return PyModuleDef_Init(&module);
}
