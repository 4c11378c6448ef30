/* Compiled request path of MaltiMiddleware (optional: malti_sdk/_middleware.py has the
 * same logic in Python, used when this module is not built or MALTI_SPEEDUPS=0).
 *
 * Three functions and six types, all called with the GIL held, none doing I/O:
 *
 *   Middleware, CallMethod
 *       MaltiMiddleware's base (app and _cell kept in the object) and its __call__ (a
 *       method descriptor); see "Middleware, CallMethod" below. For an HTTP request
 *       (other scopes: middleware._serve) the call hands the app a Watch as its send and
 *       returns a Call: the request's awaitable, which resumes the app's coroutine from C
 *       and records the request when it ends (record() below, else the middleware's
 *       Python code); see "Call" below. watch() and record() are the steps it takes; as
 *       module functions they are only the tests' way in to them.
 *
 *   watch(send, scope) -> Watch
 *       The ``send`` handed to the app. Calling it with a message notes the status and
 *       the moment the response is complete, then returns ``send(message)`` unchanged
 *       (no coroutine of its own). The last chunk of a streamed body goes through the
 *       Python coroutine given to setup(), which notes the end after the server took it.
 *
 *   RowStore()
 *       The buffer's rows (TelemetryBuffer.rows): compact slots in a ring, with the deque
 *       methods the SDK uses and take(count) -> a list of row tuples; see "RowStore" below.
 *
 *   record(watch, scope, snapshot) -> bool
 *       The middleware's common case: appends one row to the buffer and returns True
 *       (also True for a response clean mode ignores). Anything it does not handle
 *       (no snapshot match, request state, unknown routes, odd header lists, errors)
 *       returns False and leaves the request to the Python path, which owns every rule
 *       and every count. It never raises for input it does not understand.
 *
 *   encode(rows, prefixes, make_prefix, make_stamp) -> str | None
 *       The JSON objects of a chunk of buffered rows, comma-joined: the same text as
 *       RecordEncoder.encode_rows in Python (malti_sdk/_records.py), which owns the
 *       memoised prefixes and timestamps and is called back for the ones not yet made.
 *       None when a row is not of the usual shape: the Python encoder does that chunk.
 *
 *   GzipWriter()
 *       A gzip member of a batch's body, written as encode() would write its text:
 *       write_rows(rows, prefixes, make_prefix, make_stamp, comma_first) -> bool,
 *       write(bytes), finish() -> bytes, size (bytes of text). Used in place of zlib at
 *       level 1 for a tenth of its instructions; see "gzip writer" below.
 *       crc32(data, value=0, simd=True) is its CRC-32, as a function for the tests.
 *
 * Times: start and end come from CLOCK_MONOTONIC (Watch.mark_end() notes an end from
 * Python) and are compared only with each other; created_at comes from CLOCK_REALTIME,
 * as time.time(), unless malti_sdk._middleware.time was replaced (a test's frozen clock).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Branch hints for the per-request functions: every request runs their usual path, and a
 * request's other code (the server's, the app's) evicts ours from the instruction cache in
 * between, so each line of it the usual path touches is a miss. Hinted, the compiler lays
 * the checks' failure paths after the usual path instead of between its lines. */
#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

static PyObject *s_type, *s_status, *s_more_body, *s_response_start, *s_route, *s_method,
    *s_state, *s_headers, *s_root_path, *s_app_root_path, *s_path_params, *s_malti_consumer,
    *s_context, *s_malti_context, *s_get, *s_time, *s_message;

/* set by setup(): the Python side's tables, shared, never copied */
static PyObject *known_methods;    /* dict: scope method -> recorded method */
static PyObject *consumer_headers; /* dict: header name (bytes) -> rank */
/* the same names and ranks copied by setup(), compared by length and bytes: a dict look-up
 * hashes each request's new header name objects (-1 names: an odd dict, look it up) */
#define HEADER_NAMES 8
static struct {
    PyObject *name;
    long rank;
} header_names[HEADER_NAMES];
static int header_name_count = -1;
/* look-ups in the route index, by route object: an index dict is replaced on a rebuild,
 * never changed once the middleware has it (malti_sdk/_routes.py), so an entry found in
 * it stays the answer while the index is the same object (held here: never another at
 * the same address). An entry holds its route, so a route's address is not reused. */
#define ROUTE_SLOTS 8
static PyObject *route_index;
static struct {
    PyObject *route; /* borrowed: the entry holds it */
    PyObject *entry;
} route_slots[ROUTE_SLOTS];
static PyObject *anonymous;        /* "anonymous" */
static PyObject *send_last;        /* async def (watch, send, message) */
static PyObject *row_append;       /* deque.append */
static PyObject *clock_namespace;  /* the globals of malti_sdk._middleware: its "time" */
static PyObject *real_time;        /* time.time */

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double
wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* mapping[key]: a new reference, or NULL with the error. A plain dict is read without
 * calls out (the common case: ASGI scopes and messages); anything else, a dict subclass's
 * __missing__ included, through PyObject_GetItem. */
static inline PyObject *
mapping_item(PyObject *mapping, PyObject *key)
{
    if (UNLIKELY(!PyDict_CheckExact(mapping)))
        return PyObject_GetItem(mapping, key);
    PyObject *value = PyDict_GetItemWithError(mapping, key);
    if (UNLIKELY(value == NULL)) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(value);
}

/* mapping.get(key): a new reference, or NULL (with no error set) when the key is missing */
static PyObject *
mapping_get(PyObject *mapping, PyObject *key)
{
    PyObject *value;
    if (LIKELY(PyDict_Check(mapping))) {
        value = PyDict_GetItemWithError(mapping, key);
        Py_XINCREF(value);
        return value;
    }
    value = PyObject_CallMethodOneArg(mapping, s_get, key);
    if (value == Py_None) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

/* ------------------------------------------------------------------------ Watch */

typedef struct {
    PyObject_HEAD
    PyObject *send;
    PyObject *status; /* NULL until http.response.start */
    PyObject *root;   /* scope["root_path"] when the request came in, or None */
    PyObject *params; /* scope["path_params"] then, when there is a root; else None */
    double start;
    double end; /* 0 until the body starts, -1 while it streams, the end time after */
    vectorcallfunc vectorcall;
} Watch;

static PyTypeObject WatchType;

static PyObject *
watch_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Watch *self = (Watch *)op;
    Py_ssize_t positional = PyVectorcall_NARGS(nargsf);
    Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (UNLIKELY(positional + keywords != 1 ||
                 (keywords && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_message) != 0))) {
        PyErr_SetString(PyExc_TypeError, "send() takes exactly one argument, message");
        return NULL;
    }
    PyObject *message = args[0]; /* positional or send(message=...) */
    if (UNLIKELY(self->send == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "send() of a cleared Watch");
        return NULL;
    }
    PyObject *type = mapping_item(message, s_type);
    if (UNLIKELY(type == NULL))
        return NULL;
    int is_start;
    if (LIKELY(PyUnicode_CheckExact(type))) /* compared in place: no interned copy to meet by identity */
        is_start = PyUnicode_GET_LENGTH(type) == 19 && PyUnicode_KIND(type) == PyUnicode_1BYTE_KIND &&
                   memcmp(PyUnicode_DATA(type), "http.response.start", 19) == 0;
    else
        is_start = PyObject_RichCompareBool(type, s_response_start, Py_EQ);
    Py_DECREF(type);
    if (UNLIKELY(is_start < 0))
        return NULL;
    if (is_start) {
        PyObject *status = mapping_item(message, s_status);
        if (UNLIKELY(status == NULL))
            return NULL;
        Py_XSETREF(self->status, status);
    }
    else {
        PyObject *more = mapping_get(message, s_more_body);
        if (UNLIKELY(more == NULL && PyErr_Occurred()))
            return NULL;
        int streaming = 0;
        if (more != NULL) {
            streaming = PyObject_IsTrue(more);
            Py_DECREF(more);
            if (UNLIKELY(streaming < 0))
                return NULL;
        }
        if (streaming)
            self->end = -1.0;
        else if (UNLIKELY(self->end != 0.0))
            /* the last chunk of a stream: complete once the server took it */
            return PyObject_CallFunctionObjArgs(send_last, op, self->send, message, NULL);
        else
            self->end = monotonic_now(); /* a single body */
    }
    return PyObject_CallOneArg(self->send, message);
}

static int
watch_traverse(Watch *self, visitproc visit, void *arg)
{
    Py_VISIT(self->send);
    Py_VISIT(self->status);
    Py_VISIT(self->root);
    Py_VISIT(self->params);
    return 0;
}

static int
watch_clear(Watch *self)
{
    Py_CLEAR(self->send);
    Py_CLEAR(self->status);
    Py_CLEAR(self->root);
    Py_CLEAR(self->params);
    return 0;
}

static void
watch_dealloc(Watch *self)
{
    PyObject_GC_UnTrack(self);
    watch_clear(self);
    PyObject_GC_Del(self);
}

static PyObject *
watch_get_status(Watch *self, void *closure)
{
    if (self->status == NULL)
        return PyLong_FromLong(0);
    Py_INCREF(self->status);
    return self->status;
}

static PyObject *
watch_mark_end(Watch *self, PyObject *unused)
{
    self->end = monotonic_now();
    Py_RETURN_NONE;
}

static PyMethodDef watch_methods[] = {
    {"mark_end", (PyCFunction)watch_mark_end, METH_NOARGS, "note now as the end of the response"},
    {NULL},
};

static PyGetSetDef watch_getset[] = {
    {"status", (getter)watch_get_status, NULL, "the response status, 0 before http.response.start", NULL},
    {NULL},
};

static PyMemberDef watch_members[] = {
    {"start", T_DOUBLE, offsetof(Watch, start), READONLY, "monotonic seconds when the request came in"},
    {"end", T_DOUBLE, offsetof(Watch, end), 0, "0 before the body, -1 while it streams, then the end time"},
    {"root", T_OBJECT, offsetof(Watch, root), READONLY, "root_path as the request came in"},
    {"params", T_OBJECT, offsetof(Watch, params), READONLY, "path_params then, when there is a root_path"},
    {"send", T_OBJECT, offsetof(Watch, send), READONLY, "the server's send"},
    {NULL},
};

static PyTypeObject WatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "malti_sdk._speedups.Watch",
    .tp_basicsize = sizeof(Watch),
    .tp_dealloc = (destructor)watch_dealloc,
    .tp_vectorcall_offset = offsetof(Watch, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The send of one request, noting its status and when the response was complete.",
    .tp_traverse = (traverseproc)watch_traverse,
    .tp_clear = (inquiry)watch_clear,
    .tp_methods = watch_methods,
    .tp_members = watch_members,
    .tp_getset = watch_getset,
};

static PyObject *
watch_new(PyObject *send, PyObject *scope)
{
    PyObject *root = mapping_get(scope, s_root_path);
    if (UNLIKELY(root == NULL)) {
        if (PyErr_Occurred())
            return NULL;
        root = Py_NewRef(Py_None);
    }
    PyObject *params = NULL;
    int has_root = PyObject_IsTrue(root);
    if (UNLIKELY(has_root < 0)) {
        Py_DECREF(root);
        return NULL;
    }
    if (has_root) {
        params = mapping_get(scope, s_path_params);
        if (UNLIKELY(params == NULL && PyErr_Occurred())) {
            Py_DECREF(root);
            return NULL;
        }
    }
    if (params == NULL)
        params = Py_NewRef(Py_None);
    Watch *self = PyObject_GC_New(Watch, &WatchType);
    if (UNLIKELY(self == NULL)) {
        Py_DECREF(root);
        Py_DECREF(params);
        return NULL;
    }
    self->send = Py_NewRef(send);
    self->status = NULL;
    self->root = root;
    self->params = params;
    self->end = 0.0;
    self->vectorcall = watch_call;
    self->start = monotonic_now();
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
speedups_watch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "watch(send, scope)");
        return NULL;
    }
    return watch_new(args[0], args[1]);
}

/* --------------------------------------------------------------------- RowStore */

/* The buffer's rows (TelemetryBuffer.rows when this module is used): a ring of plain
 * structs in place of a deque of tuples. record() stores a request's row without making
 * a Python object (no tuple, no floats), and a buffered row costs the 56 bytes of its
 * slot; take() makes the tuples the encoders read, a batch at a time. The deque methods
 * the SDK and its tests use (append, popleft, extendleft, clear, len, iteration) behave as
 * a deque's. Each change to the ring calls out to nothing (no Python code, no allocation
 * of a GC object), and references are dropped or turned into objects only after it, on
 * slots already detached: a finalizer that records a request meanwhile finds the ring
 * consistent. */
typedef struct {
    PyObject *method; /* NULL: pattern holds a row of another shape, as it was given */
    PyObject *pattern;
    PyObject *status;
    PyObject *consumer;
    PyObject *context;
    double elapsed;
    double created;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t capacity; /* 0 or a power of two */
    Py_ssize_t head;     /* the oldest row's slot */
    Py_ssize_t count;
    /* rows holding an object the collector tracks: with none (the request path's rows are
     * strs, ints, bytes and None), a collection does not walk the ring at all */
    Py_ssize_t holding_gc;
} RowStore;

static PyTypeObject RowStoreType;

#define STORE_MIN_CAPACITY 256
#define STORE_KEEP_CAPACITY 4096 /* never shrunk below (a few batches' worth) */

/* the `count` oldest rows' slots copied, in order, to `out` */
static void
store_copy_out(RowStore *self, Slot *out, Py_ssize_t count)
{
    Py_ssize_t first = self->capacity - self->head < count ? self->capacity - self->head : count;
    if (count) {
        memcpy(out, self->slots + self->head, (size_t)first * sizeof(Slot));
        memcpy(out + first, self->slots, (size_t)(count - first) * sizeof(Slot));
    }
}

/* the ring moved to `capacity` slots (at least its rows): 0, or -1 (no error set) */
static int
store_resize(RowStore *self, Py_ssize_t capacity)
{
    Slot *slots = PyMem_Malloc((size_t)capacity * sizeof(Slot));
    if (slots == NULL)
        return -1;
    store_copy_out(self, slots, self->count);
    PyMem_Free(self->slots);
    self->slots = slots;
    self->capacity = capacity;
    self->head = 0;
    return 0;
}

/* room for `extra` more rows: 0, or -1 with MemoryError */
static int
store_reserve(RowStore *self, Py_ssize_t extra)
{
    if (self->count + extra <= self->capacity)
        return 0;
    Py_ssize_t capacity = self->capacity ? self->capacity : STORE_MIN_CAPACITY;
    while (capacity < self->count + extra) {
        if (capacity > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Slot)) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    if (store_resize(self, capacity) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* a ring mostly empty again (after an outage, say) given back down to twice its rows; a
 * failed allocation leaves it as it is */
static void
store_shrink(RowStore *self)
{
    if (self->capacity <= STORE_KEEP_CAPACITY || self->count > self->capacity / 8)
        return;
    Py_ssize_t capacity = STORE_KEEP_CAPACITY;
    while (capacity < 2 * self->count)
        capacity *= 2;
    store_resize(self, capacity);
}

/* a slot holding (new references to) a row: a usual row is kept in parts, any other as it is */
static void
slot_from_row(Slot *slot, PyObject *row)
{
    if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) == 7 && PyFloat_CheckExact(PyTuple_GET_ITEM(row, 3)) &&
        PyFloat_CheckExact(PyTuple_GET_ITEM(row, 6))) {
        slot->method = Py_NewRef(PyTuple_GET_ITEM(row, 0));
        slot->pattern = Py_NewRef(PyTuple_GET_ITEM(row, 1));
        slot->status = Py_NewRef(PyTuple_GET_ITEM(row, 2));
        slot->consumer = Py_NewRef(PyTuple_GET_ITEM(row, 4));
        slot->context = Py_NewRef(PyTuple_GET_ITEM(row, 5));
        slot->elapsed = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(row, 3));
        slot->created = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(row, 6));
    }
    else {
        slot->method = NULL;
        slot->pattern = Py_NewRef(row);
    }
}

static void
slot_clear(Slot *slot)
{
    if (slot->method != NULL) {
        Py_DECREF(slot->method);
        Py_DECREF(slot->status);
        Py_DECREF(slot->consumer);
        Py_DECREF(slot->context);
    }
    Py_DECREF(slot->pattern);
}

/* the row of a detached slot, taking over its references; NULL (the slot untouched) on error */
static PyObject *
slot_to_row(Slot *slot)
{
    if (slot->method == NULL)
        return slot->pattern;
    PyObject *elapsed = PyFloat_FromDouble(slot->elapsed);
    PyObject *created = elapsed ? PyFloat_FromDouble(slot->created) : NULL;
    PyObject *row = created ? PyTuple_New(7) : NULL; /* may collect garbage: the slot is detached */
    if (row == NULL) {
        Py_XDECREF(elapsed);
        Py_XDECREF(created);
        return NULL;
    }
    PyObject *consumer = slot->consumer, *context = slot->context;
    PyTuple_SET_ITEM(row, 0, slot->method);
    PyTuple_SET_ITEM(row, 1, slot->pattern);
    PyTuple_SET_ITEM(row, 2, slot->status);
    PyTuple_SET_ITEM(row, 3, elapsed);
    PyTuple_SET_ITEM(row, 4, consumer);
    PyTuple_SET_ITEM(row, 5, context);
    PyTuple_SET_ITEM(row, 6, created);
    /* strs, an int, floats, bytes and None form no cycle: as record() does for its rows */
    if (context == Py_None && (PyUnicode_CheckExact(consumer) || PyBytes_CheckExact(consumer)) &&
        PyUnicode_CheckExact(slot->method) && PyUnicode_CheckExact(slot->pattern) && PyLong_CheckExact(slot->status))
        PyObject_GC_UnTrack(row);
    return row;
}

static inline int
slot_holds_gc(const Slot *slot)
{
    if (slot->method == NULL)
        return PyObject_IS_GC(slot->pattern);
    return PyObject_IS_GC(slot->method) || PyObject_IS_GC(slot->pattern) || PyObject_IS_GC(slot->status) ||
           PyObject_IS_GC(slot->consumer) || PyObject_IS_GC(slot->context);
}

/* a filled slot (its references move in) put after the newest row, or before the oldest:
 * room reserved. The only places rows enter the ring, so its counts stay right. */
static inline void
store_push_back(RowStore *self, const Slot *slot)
{
    self->slots[(self->head + self->count) & (self->capacity - 1)] = *slot;
    self->holding_gc += slot_holds_gc(slot);
    self->count++;
}

static inline void
store_push_front(RowStore *self, const Slot *slot)
{
    self->head = (self->head - 1) & (self->capacity - 1);
    self->slots[self->head] = *slot;
    self->holding_gc += slot_holds_gc(slot);
    self->count++;
}

/* the `count` oldest rows moved to a new array (NULL with MemoryError; count > 0) */
static Slot *
store_detach(RowStore *self, Py_ssize_t count)
{
    Slot *detached = PyMem_Malloc((size_t)count * sizeof(Slot));
    if (detached == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    store_copy_out(self, detached, count);
    self->head = (self->head + count) & (self->capacity - 1);
    self->count -= count;
    if (self->holding_gc)
        for (Py_ssize_t i = 0; i < count; i++)
            self->holding_gc -= slot_holds_gc(&detached[i]);
    return detached;
}

/* slots put back before the oldest row, in their order (their references move in):
 * 0, or -1 with MemoryError, the slots then dropped */
static int
store_prepend(RowStore *self, Slot *slots, Py_ssize_t count)
{
    if (store_reserve(self, count) < 0) {
        for (Py_ssize_t i = 0; i < count; i++)
            slot_clear(&slots[i]);
        return -1;
    }
    for (Py_ssize_t i = count - 1; i >= 0; i--)
        store_push_front(self, &slots[i]);
    return 0;
}

/* rows of detached slots as a list; on error the slots (and rows made) go back to the front */
static PyObject *
slots_to_list(RowStore *self, Slot *slots, Py_ssize_t count)
{
    PyObject *list = PyList_New(count);
    if (list == NULL) {
        store_prepend(self, slots, count);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *row = slot_to_row(&slots[i]);
        if (row == NULL) {
            for (Py_ssize_t j = 0; j < i; j++) { /* rows made so far, kept as they are */
                slots[j].method = NULL;
                slots[j].pattern = Py_NewRef(PyList_GET_ITEM(list, j));
            }
            Py_DECREF(list);
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            if (store_prepend(self, slots, count) < 0)
                PyErr_Clear(); /* the first error is the one to tell */
            PyErr_Restore(type, value, traceback);
            return NULL;
        }
        PyList_SET_ITEM(list, i, row);
    }
    return list;
}

static PyObject *
row_store_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "RowStore() takes no arguments");
        return NULL;
    }
    RowStore *self = PyObject_GC_New(RowStore, type);
    if (self == NULL)
        return NULL;
    self->slots = NULL;
    self->capacity = self->head = self->count = self->holding_gc = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
row_store_traverse(RowStore *self, visitproc visit, void *arg)
{
    if (self->holding_gc == 0)
        return 0;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Slot *slot = &self->slots[(self->head + i) & (self->capacity - 1)];
        Py_VISIT(slot->pattern);
        if (slot->method != NULL) {
            Py_VISIT(slot->method);
            Py_VISIT(slot->status);
            Py_VISIT(slot->consumer);
            Py_VISIT(slot->context);
        }
    }
    return 0;
}

/* clear(): every row dropped (the ring emptied first) */
static int
row_store_clear(RowStore *self)
{
    Slot *slots = self->slots;
    Py_ssize_t capacity = self->capacity, head = self->head, count = self->count;
    self->slots = NULL;
    self->capacity = self->head = self->count = self->holding_gc = 0;
    for (Py_ssize_t i = 0; i < count; i++)
        slot_clear(&slots[(head + i) & (capacity - 1)]);
    PyMem_Free(slots);
    return 0;
}

static void
row_store_dealloc(RowStore *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, row_store_dealloc)
    row_store_clear(self);
    PyObject_GC_Del(self);
    Py_TRASHCAN_END
}

/* a row after the newest: 0, or -1 with MemoryError */
static int
store_add_row(RowStore *self, PyObject *row)
{
    if (store_reserve(self, 1) < 0)
        return -1;
    Slot slot;
    slot_from_row(&slot, row);
    store_push_back(self, &slot);
    return 0;
}

static PyObject *
row_store_append(RowStore *self, PyObject *row)
{
    if (store_add_row(self, row) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
row_store_extendleft(RowStore *self, PyObject *iterable)
{
    PyObject *items = PySequence_List(iterable); /* any code iterating runs before the change */
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(items);
    if (store_reserve(self, count) < 0) {
        Py_DECREF(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) { /* each to the left in turn, as a deque does */
        Slot slot;
        slot_from_row(&slot, PyList_GET_ITEM(items, i));
        store_push_front(self, &slot);
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
}

static PyObject *
row_store_popleft(RowStore *self, PyObject *unused)
{
    if (self->count == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty RowStore");
        return NULL;
    }
    Slot *slot = store_detach(self, 1);
    if (slot == NULL)
        return NULL;
    PyObject *row = slot_to_row(slot);
    if (row == NULL)
        store_prepend(self, slot, 1);
    PyMem_Free(slot);
    return row;
}

static PyObject *
row_store_take(RowStore *self, PyObject *arg)
{
    /* an int past the range is clamped: the deque path's loop takes all, or none */
    Py_ssize_t count = PyNumber_AsSsize_t(arg, NULL);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    if (count > self->count)
        count = self->count;
    if (count <= 0)
        return PyList_New(0);
    Slot *slots = store_detach(self, count);
    if (slots == NULL)
        return NULL;
    store_shrink(self);
    PyObject *list = slots_to_list(self, slots, count);
    PyMem_Free(slots);
    return list;
}

static PyObject *
row_store_clear_method(RowStore *self, PyObject *unused)
{
    row_store_clear(self);
    Py_RETURN_NONE;
}

/* iter(store): over a list of the rows as they are now (copies; the store is unchanged) */
static PyObject *
row_store_iter(RowStore *self)
{
    Py_ssize_t count = self->count;
    if (count == 0) {
        PyObject *empty = PyList_New(0);
        PyObject *iterator = empty ? PyObject_GetIter(empty) : NULL;
        Py_XDECREF(empty);
        return iterator;
    }
    Slot *copies = PyMem_Malloc((size_t)count * sizeof(Slot));
    if (copies == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        Slot *slot = &copies[i];
        *slot = self->slots[(self->head + i) & (self->capacity - 1)];
        Py_INCREF(slot->pattern);
        if (slot->method != NULL) {
            Py_INCREF(slot->method);
            Py_INCREF(slot->status);
            Py_INCREF(slot->consumer);
            Py_INCREF(slot->context);
        }
    }
    PyObject *list = PyList_New(count);
    int copies_left = list == NULL; /* PyList_New failed: every copy still holds its references */
    for (Py_ssize_t i = 0; list != NULL && i < count; i++) {
        PyObject *row = slot_to_row(&copies[i]);
        if (row == NULL) {
            for (Py_ssize_t j = i; j < count; j++)
                slot_clear(&copies[j]);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, row);
    }
    if (list == NULL) {
        if (copies_left)
            for (Py_ssize_t j = 0; j < count; j++)
                slot_clear(&copies[j]);
        PyMem_Free(copies);
        return NULL;
    }
    PyMem_Free(copies);
    PyObject *iterator = PyObject_GetIter(list);
    Py_DECREF(list);
    return iterator;
}

static Py_ssize_t
row_store_length(RowStore *self)
{
    return self->count;
}

static PySequenceMethods row_store_as_sequence = {
    .sq_length = (lenfunc)row_store_length,
};

static PyMethodDef row_store_methods[] = {
    {"append", (PyCFunction)row_store_append, METH_O, "append(row): a row after the newest"},
    {"extendleft", (PyCFunction)row_store_extendleft, METH_O,
     "extendleft(rows): each row before the oldest in turn (so in reverse order), as deque.extendleft"},
    {"popleft", (PyCFunction)row_store_popleft, METH_NOARGS, "popleft() -> the oldest row (IndexError when empty)"},
    {"take", (PyCFunction)row_store_take, METH_O, "take(count) -> a list of up to count of the oldest rows, removed"},
    {"clear", (PyCFunction)row_store_clear_method, METH_NOARGS, "clear(): every row dropped"},
    {NULL},
};

static PyTypeObject RowStoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "malti_sdk._speedups.RowStore",
    .tp_basicsize = sizeof(RowStore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RowStore(): the buffer's rows, as compact slots (see the comment in _speedups.c)",
    .tp_new = row_store_new,
    .tp_dealloc = (destructor)row_store_dealloc,
    .tp_traverse = (traverseproc)row_store_traverse,
    .tp_clear = (inquiry)row_store_clear,
    .tp_iter = (getiterfunc)row_store_iter,
    .tp_as_sequence = &row_store_as_sequence,
    .tp_methods = row_store_methods,
};

/* ------------------------------------------------------------------------ record */

/* 1: the state holds a consumer or context (the Python path handles those), 0: not, -1: error */
static int
state_has_request_data(PyObject *scope)
{
    PyObject *state = mapping_get(scope, s_state);
    if (state == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int result = PyObject_IsTrue(state);
    if (result > 0) {
        PyObject *keys[3] = {s_malti_consumer, s_context, s_malti_context};
        result = 0;
        for (int i = 0; i < 3 && result == 0; i++)
            result = PySequence_Contains(state, keys[i]);
    }
    Py_DECREF(state);
    return result;
}

/* index[id(route)] (borrowed), NULL when not there or on error */
static PyObject *
route_entry(PyObject *index, PyObject *route)
{
    size_t slot = ((uintptr_t)route >> 4) % ROUTE_SLOTS;
    if (LIKELY(index == route_index && route_slots[slot].route == route))
        return route_slots[slot].entry;
    PyObject *key = PyLong_FromVoidPtr(route);
    if (key == NULL)
        return NULL;
    PyObject *entry = PyDict_GetItemWithError(index, key);
    Py_DECREF(key);
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 1 ||
        PyTuple_GET_ITEM(entry, 0) != route)
        return entry;
    Py_INCREF(entry); /* a strong reference across the clean-up below, which may run finalizers */
    if (index != route_index) {
        PyObject *old = route_index;
        route_index = Py_NewRef(index);
        for (int i = 0; i < ROUTE_SLOTS; i++) {
            route_slots[i].route = NULL;
            Py_CLEAR(route_slots[i].entry);
        }
        Py_XDECREF(old);
    }
    PyObject *old_entry = route_slots[slot].entry;
    route_slots[slot].route = route;
    route_slots[slot].entry = entry; /* the reference taken above */
    Py_XDECREF(old_entry);
    return entry; /* borrowed: the slot holds it, and nothing below replaces the slot */
}

/* the rank of a consumer header name, -1 for other names, -2 on error (set) */
static long
header_rank(PyObject *name)
{
    if (UNLIKELY(header_name_count < 0)) {
        PyObject *found = PyDict_GetItemWithError(consumer_headers, name);
        if (found == NULL)
            return PyErr_Occurred() ? -2 : -1;
        if (!PyLong_CheckExact(found)) /* ranks are ints: nothing to convert that could call out */
            return -3;
        long rank = PyLong_AsLong(found);
        return rank == -1 && PyErr_Occurred() ? -2 : rank;
    }
    Py_ssize_t length = PyBytes_GET_SIZE(name);
    for (int i = 0; i < header_name_count; i++)
        if (PyBytes_GET_SIZE(header_names[i].name) == length &&
            memcmp(PyBytes_AS_STRING(header_names[i].name), PyBytes_AS_STRING(name), (size_t)length) == 0)
            return header_names[i].rank;
    return -1;
}

/* the row for a request the common case covers: 1 appended (or ignored), 0 not handled, -1 error.
 *
 * The checks come in the Python path's order (route, method, state, backlog, mount, clean
 * mode), so both count the same when one of them fails. The state test may run the app's
 * code, and on 3.11 any allocation of a GC-tracked object (the row) may run finalizers:
 * everything kept across those is a strong reference, and the headers are read only after
 * the row exists, with nothing between reading and storing the consumer that can call out. */
static int
record_row(Watch *watch, PyObject *scope, PyObject *snapshot)
{
    double end = watch->end;
    PyObject *status = watch->status;
    if (UNLIKELY(!(end > 0.0) || status == NULL || !PyLong_CheckExact(status)))
        return 0;
    int overflow = 0;
    long code = PyLong_AsLongAndOverflow(status, &overflow);
    if (UNLIKELY(overflow || code < 100 || code > 599))
        return 0;
    if (UNLIKELY(!PyDict_CheckExact(scope) || !PyTuple_CheckExact(snapshot) || PyTuple_GET_SIZE(snapshot) != 4))
        return 0;
    /* the snapshot tuple (held by the caller) keeps these alive */
    PyObject *rows = PyTuple_GET_ITEM(snapshot, 0);
    PyObject *limit = PyTuple_GET_ITEM(snapshot, 1);
    PyObject *clean_mode = PyTuple_GET_ITEM(snapshot, 2);
    PyObject *index = PyTuple_GET_ITEM(snapshot, 3);
    if (UNLIKELY(!PyDict_CheckExact(index) || !PyBool_Check(clean_mode) || !PyLong_CheckExact(limit)))
        return 0;

    int result = 0;
    PyObject *pattern = NULL, *method = NULL, *row = NULL, *created = NULL;
    Py_INCREF(status);

    /* the matched route's full pattern, from the route index */
    PyObject *route = PyDict_GetItemWithError(scope, s_route);
    if (UNLIKELY(route == NULL))
        goto failed_or_not_handled;
    PyObject *entry = route_entry(index, route);
    if (UNLIKELY(entry == NULL))
        goto failed_or_not_handled;
    if (UNLIKELY(!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 2 || PyTuple_GET_ITEM(entry, 0) != route ||
                 !PyUnicode_CheckExact(PyTuple_GET_ITEM(entry, 1))))
        goto done;
    pattern = Py_NewRef(PyTuple_GET_ITEM(entry, 1));

    PyObject *scope_method = PyDict_GetItemWithError(scope, s_method);
    if (UNLIKELY(scope_method == NULL))
        goto failed_or_not_handled;
    if (UNLIKELY(!PyUnicode_CheckExact(scope_method)))
        goto done;
    method = PyDict_GetItemWithError(known_methods, scope_method);
    if (UNLIKELY(method == NULL))
        goto failed_or_not_handled;
    Py_INCREF(method);

    int has_data = state_has_request_data(scope); /* may run the app's code */
    if (UNLIKELY(has_data != 0)) {
        result = has_data < 0 ? -1 : 0;
        goto done;
    }

    Py_ssize_t backlog = PyLong_AsSsize_t(limit);
    if (UNLIKELY(backlog == -1 && PyErr_Occurred()))
        goto error;
    Py_ssize_t buffered = PyObject_Size(rows);
    if (UNLIKELY(buffered < 0))
        goto error;
    if (UNLIKELY(buffered >= backlog))
        goto done;

    /* below a Mount this middleware's own route index does not know: the Python path */
    PyObject *root = watch->root;
    if (root != Py_None) { /* "" under uvicorn, which always sets root_path */
        if (UNLIKELY(!PyUnicode_CheckExact(root)))
            goto done;
        if (PyUnicode_GET_LENGTH(root)) {
            PyObject *app_root = PyDict_GetItemWithError(scope, s_app_root_path);
            if (app_root == NULL && PyErr_Occurred())
                goto error;
            if (app_root != NULL && (!PyUnicode_CheckExact(app_root) || PyUnicode_Compare(root, app_root) != 0))
                goto done;
        }
    }

    if (UNLIKELY((code == 404 || code == 401) && clean_mode == Py_True)) {
        result = 1; /* ignored, as clean mode asks */
        goto done;
    }

    /* created_at: time.time(), unless a test (freezegun...) replaced _middleware.time */
    PyObject *clock = PyDict_GetItemWithError(clock_namespace, s_time);
    if (UNLIKELY(clock == NULL && PyErr_Occurred()))
        goto error;
    int real_clock = clock == NULL || clock == real_time;
    /* into a RowStore as a slot (no object made), else as a tuple through rows.append */
    RowStore *store = real_clock && Py_IS_TYPE(rows, &RowStoreType) ? (RowStore *)rows : NULL;
    if (UNLIKELY(store == NULL)) {
        if (real_clock)
            created = PyFloat_FromDouble(wall_now());
        else {
            Py_INCREF(clock); /* a caller owns what it calls */
            created = PyObject_CallNoArgs(clock);
            Py_DECREF(clock);
        }
        if (created == NULL)
            goto error;
        row = PyTuple_New(7); /* may collect garbage: nothing borrowed is held across it */
        if (row == NULL)
            goto error;
    }

    /* the consumer header of the best rank (the first of equal ones): no calls out from here */
    PyObject *headers = PyDict_GetItemWithError(scope, s_headers);
    if (UNLIKELY(headers == NULL))
        goto failed_or_not_handled;
    if (UNLIKELY(!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers)))
        goto done;
    PyObject *consumer = anonymous;
    long rank = 4;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(headers);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *header = items[i];
        if (UNLIKELY(!PyTuple_CheckExact(header) || PyTuple_GET_SIZE(header) != 2 ||
                     !PyBytes_CheckExact(PyTuple_GET_ITEM(header, 0))))
            goto done;
        long found_rank = header_rank(PyTuple_GET_ITEM(header, 0));
        if (LIKELY(found_rank == -1))
            continue;
        if (UNLIKELY(found_rank == -2))
            goto error;
        if (UNLIKELY(found_rank < -1))
            goto done;
        if (found_rank < rank) {
            PyObject *value = PyTuple_GET_ITEM(header, 1);
            if (UNLIKELY(!PyBytes_CheckExact(value)))
                goto done;
            consumer = PyBytes_GET_SIZE(value) ? value : anonymous;
            rank = found_rank;
        }
    }
    if (LIKELY(store != NULL)) {
        /* reserved only now: the headers look-up above may run Python code (a scope key's __eq__) */
        if (UNLIKELY(store_reserve(store, 1) < 0))
            goto error;
        Slot slot = {method, pattern, status, Py_NewRef(consumer), Py_NewRef(Py_None),
                     (end - watch->start) * 1000.0, wall_now()};
        store_push_back(store, &slot);
        method = pattern = status = NULL; /* owned by the slot now */
        result = 1;
        goto done;
    }
    PyTuple_SET_ITEM(row, 4, Py_NewRef(consumer));
    PyObject *elapsed = PyFloat_FromDouble((end - watch->start) * 1000.0);
    if (elapsed == NULL)
        goto error;
    PyTuple_SET_ITEM(row, 0, method);
    PyTuple_SET_ITEM(row, 1, pattern);
    PyTuple_SET_ITEM(row, 2, status);
    PyTuple_SET_ITEM(row, 3, elapsed);
    PyTuple_SET_ITEM(row, 5, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(row, 6, created);
    /* strs, an int, floats, bytes and None cannot form a cycle: the collector need not
     * look at a row while it waits in the buffer (it would untrack it at its first pass) */
    if (PyFloat_CheckExact(created))
        PyObject_GC_UnTrack(row);
    method = pattern = status = created = NULL; /* owned by the row now */
    if (Py_IS_TYPE(rows, &RowStoreType)) { /* a replaced clock's row */
        if (store_add_row((RowStore *)rows, row) < 0)
            goto error;
    }
    else {
        PyObject *call_args[2] = {rows, row};
        PyObject *append = Py_NewRef(row_append);
        PyObject *appended = PyObject_Vectorcall(append, call_args, 2, NULL);
        Py_DECREF(append);
        if (appended == NULL)
            goto error;
        Py_DECREF(appended);
    }
    result = 1;
    goto done;

failed_or_not_handled: /* a look-up found nothing: an error when one is set */
    result = PyErr_Occurred() ? -1 : 0;
    goto done;
error:
    result = -1;
done:
    Py_XDECREF(row);
    Py_XDECREF(created);
    Py_XDECREF(method);
    Py_XDECREF(pattern);
    Py_XDECREF(status);
    return result;
}

static PyObject *
speedups_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !Py_IS_TYPE(args[0], &WatchType)) {
        PyErr_SetString(PyExc_TypeError, "record(watch, scope, snapshot)");
        return NULL;
    }
    if (known_methods == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "malti_sdk._speedups.setup() was not called");
        return NULL;
    }
    int result = record_row((Watch *)args[0], args[1], args[2]);
    if (result < 0)
        return NULL;
    return PyBool_FromLong(result);
}

/* -------------------------------------------------------------------------- Call */

/* What MaltiMiddleware.__call__ returns for an HTTP request when this module is used:
 * the awaitable of the app's coroutine, which records the request when that coroutine
 * ends. It replaces an ``async def __call__`` whose frame sat in the await chain of the
 * request: a coroutine object made per request, and one more Python frame resumed each
 * time the app's coroutine resumes. Here each resume is one C call (am_send) into the
 * app's coroutine, and the end of the request is recorded as the Python path records it:
 *
 *   the app returned      record(watch, scope, snapshot) in C, else
 *                         middleware._completed(scope, watch)
 *   the app raised an     middleware._completed(scope, watch) (500 unless the response was
 *   Exception             complete), then the same exception, traceback untouched
 *   anything else         (cancellation, close()) nothing recorded, as the Python path
 *
 * Like the ``async def``, it returns None whatever the app's coroutine returned.
 * It is a coroutine to asyncio (send, throw, close, __await__, cr_* attributes; registered
 * with collections.abc.Coroutine by the Python side), so asyncio.run(), create_task() and
 * anyio take it as they take the ``async def``'s coroutine. One difference: the app is
 * called (and the request's start noted) when __call__ returns the Call, where the
 * ``async def`` called it when first resumed; a throw() or close() before that first
 * resume closes the app's coroutine unstarted, and nothing is recorded. */
typedef struct {
    PyObject_HEAD
    PyObject *inner;      /* the app's coroutine, a Call below, or what ``await`` would resume
                             of another awaitable (see awaitable_iter); NULL once it ended */
    PyObject *middleware; /* the MaltiMiddleware */
    PyObject *cell;       /* its _cell: [snapshot or None], read when the request ends */
    PyObject *scope;
    PyObject *watch; /* the Watch handed to the app as its send */
    char running;    /* in send, throw or close: a re-entrant call is refused, as a coroutine's */
    char started;    /* sent to once: the ``async def``'s coroutine would be running the app */
    PyObject *weakreflist;
} Call;

static PyTypeObject CallType;
static PyObject *raise_later; /* async def (exception): raise exception */
static PyObject *s_http, *s_completed, *s_serve, *s_failed, *s_throw, *s_close, *s_wrapped;

/* The exception being raised, taken: an instance with its traceback (a new reference; the
 * error indicator is cleared), or NULL when none is set. PyErr_GetRaisedException from 3.12. */
static PyObject *
take_raised(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
}

/* The request ended: the app's coroutine returned (RETURN, *result its value) or raised
 * (ERROR, the exception set). Records it, then returns what the caller must return. */
static PySendResult
call_ended(Call *self, PySendResult status, PyObject **result)
{
    PyObject *inner = self->inner;
    self->inner = NULL;
    if (LIKELY(status == PYGEN_RETURN)) {
        Py_XDECREF(inner);
        Py_SETREF(*result, Py_NewRef(Py_None)); /* None, as the ``async def`` returned */
        /* the middleware's snapshot as it is now (the sender may have dropped it meanwhile) */
        PyObject *cell = self->cell, *snapshot = NULL;
        if (LIKELY(PyList_CheckExact(cell) && PyList_GET_SIZE(cell) == 1))
            snapshot = Py_NewRef(PyList_GET_ITEM(cell, 0));
        int recorded = 0;
        if (LIKELY(snapshot != NULL && snapshot != Py_None)) {
            recorded = record_row((Watch *)self->watch, self->scope, snapshot);
            if (UNLIKELY(recorded < 0)) { /* telemetry must never break the app: count it (and log it), go on */
                PyObject *error = take_raised();
                PyObject *done = PyObject_CallMethodOneArg(self->middleware, s_failed, error ? error : Py_None);
                if (done == NULL)
                    PyErr_Clear();
                Py_XDECREF(done);
                Py_XDECREF(error);
                recorded = 1;
            }
        }
        Py_XDECREF(snapshot);
        if (UNLIKELY(!recorded)) {
            PyObject *done = PyObject_CallMethodObjArgs(self->middleware, s_completed, self->scope, self->watch, NULL);
            if (done == NULL) { /* as an exception out of the Python path's own code would */
                Py_CLEAR(*result);
                return PYGEN_ERROR;
            }
            Py_DECREF(done);
        }
        return PYGEN_RETURN;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) { /* cancelled, GeneratorExit, ...: not recorded */
        Py_XDECREF(inner);
        return PYGEN_ERROR;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    Py_XDECREF(inner);
    PyObject *done = PyObject_CallMethodObjArgs(self->middleware, s_completed, self->scope, self->watch, NULL);
    if (done == NULL) { /* _completed catches what recording raises; keep the app's exception */
        PyErr_Clear();
    }
    Py_XDECREF(done);
    PyErr_Restore(type, value, traceback);
    return PYGEN_ERROR;
}

/* 0, or -1 with an error: the Call cannot be resumed now */
static int
call_check(Call *self)
{
    if (self->running) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return -1;
    }
    if (self->inner == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return -1;
    }
    return 0;
}

static PySendResult
call_am_send(Call *self, PyObject *arg, PyObject **result)
{
    if (UNLIKELY(call_check(self) < 0)) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    if (!self->started) {
        if (UNLIKELY(arg != Py_None)) {
            PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
            *result = NULL;
            return PYGEN_ERROR;
        }
        self->started = 1;
    }
    self->running = 1;
    PySendResult status = PyIter_Send(self->inner, arg, result);
    self->running = 0;
    if (LIKELY(status == PYGEN_NEXT))
        return status;
    return call_ended(self, status, result);
}

/* StopIteration(value), as a coroutine's send() and throw() raise it when it returns */
static void
set_stop_iteration(PyObject *value)
{
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return;
    }
    PyObject *exception = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (exception != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exception);
        Py_DECREF(exception);
    }
}

static PyObject *
call_iternext(Call *self)
{
    PyObject *result;
    PySendResult status = call_am_send(self, Py_None, &result);
    if (status == PYGEN_NEXT)
        return result;
    if (status == PYGEN_RETURN) {
        if (result != Py_None)
            set_stop_iteration(result);
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *
call_send_method(Call *self, PyObject *arg)
{
    PyObject *result;
    PySendResult status = call_am_send(self, arg, &result);
    if (status == PYGEN_NEXT)
        return result;
    if (status == PYGEN_RETURN) {
        set_stop_iteration(result);
        Py_DECREF(result);
    }
    return NULL;
}

/* Let go of the app's awaitable before anything ran (throw() or close() first): closed, so
 * that it does not warn it was never awaited (the ``async def``'s coroutine would not have
 * called the app yet). Nothing is recorded. */
static void
call_drop_unstarted(Call *self)
{
    PyObject *inner = self->inner;
    self->inner = NULL;
    self->started = 1;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *done = PyObject_CallMethodNoArgs(inner, s_close);
    if (done == NULL)
        PyErr_Clear(); /* an iterator without close(): nothing to close */
    Py_XDECREF(done);
    Py_DECREF(inner);
    PyErr_Restore(type, value, traceback);
}

/* throw()'s arguments as the current exception, as a coroutine raises them where it waits */
static int
set_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *thrown = args[0], *value = nargs > 1 ? args[1] : Py_None;
    PyObject *traceback = nargs > 2 ? args[2] : Py_None;
    if (traceback != Py_None && !PyTraceBack_Check(traceback)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return -1;
    }
    if (PyExceptionClass_Check(thrown)) {
        /* made from the class and value; if making it fails, that failure is what is raised */
        PyObject *type = Py_NewRef(thrown), *instance = Py_NewRef(value), *tb = NULL;
        PyErr_NormalizeException(&type, &instance, &tb);
        if (traceback != Py_None)
            Py_XSETREF(tb, Py_NewRef(traceback));
        PyErr_Restore(type, instance, tb);
        return 0;
    }
    if (PyExceptionInstance_Check(thrown)) {
        if (value != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return -1;
        }
        Py_INCREF(thrown);
    }
    else {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                     Py_TYPE(thrown)->tp_name);
        return -1;
    }
    if (traceback != Py_None && PyException_SetTraceback(thrown, traceback) < 0) {
        Py_DECREF(thrown);
        return -1;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(thrown), thrown);
    Py_DECREF(thrown);
    return 0;
}

static PyObject *call_close(Call *self, PyObject *unused);

static PyObject *
call_throw(Call *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw(exception) or throw(type[, value[, traceback]])");
        return NULL;
    }
    if (call_check(self) < 0)
        return NULL;
    if (!self->started) { /* raised before anything ran, as in a coroutine not yet started */
        if (set_thrown(args, nargs) == 0)
            call_drop_unstarted(self); /* (arguments refused: left as it was) */
        return NULL;
    }
    PyObject *thrown = PyExceptionInstance_Check(args[0]) ? (PyObject *)Py_TYPE(args[0]) : args[0];
    if (PyExceptionClass_Check(thrown) && PyErr_GivenExceptionMatches(thrown, PyExc_GeneratorExit)) {
        /* as a coroutine awaiting another: that one is closed, then GeneratorExit raised here */
        PyObject *done = call_close(self, NULL);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
        set_thrown(args, nargs);
        return NULL;
    }
    PyObject *method = PyObject_GetAttr(self->inner, s_throw), *result = NULL;
    if (method == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        /* an iterator without throw(): raised where the app is awaited, as ``await`` does */
        PyErr_Clear();
        if (set_thrown(args, nargs) < 0)
            return NULL;
    }
    else {
        self->running = 1;
        result = PyObject_Vectorcall(method, args, nargs, NULL);
        self->running = 0;
        Py_DECREF(method);
        if (result != NULL)
            return result; /* the app's coroutine caught it and is waiting again */
    }
    PySendResult status = PYGEN_ERROR;
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) { /* it caught it and returned */
        PyObject *error = take_raised();
        if (error != NULL && PyObject_TypeCheck(error, (PyTypeObject *)PyExc_StopIteration)) {
            result = Py_NewRef(((PyStopIterationObject *)error)->value);
            status = PYGEN_RETURN;
            Py_DECREF(error);
        }
        else if (error != NULL) /* (making the StopIteration failed: that failure, as it was) */
            PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(error)), error, PyException_GetTraceback(error));
    }
    status = call_ended(self, status, &result);
    if (status == PYGEN_RETURN) {
        set_stop_iteration(result);
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *
call_close(Call *self, PyObject *unused)
{
    if (self->inner == NULL)
        Py_RETURN_NONE;
    if (call_check(self) < 0)
        return NULL;
    if (!self->started) {
        call_drop_unstarted(self);
        Py_RETURN_NONE;
    }
    PyObject *method = PyObject_GetAttr(self->inner, s_close), *done;
    if (method == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear(); /* an iterator without close(): only let go of it, as ``await`` does */
        done = Py_NewRef(Py_None);
    }
    else {
        self->running = 1;
        done = PyObject_CallNoArgs(method);
        self->running = 0;
        Py_DECREF(method);
    }
    if (done != NULL) {
        Py_DECREF(done);
        Py_CLEAR(self->inner); /* closed: the request was abandoned, nothing to record */
        Py_RETURN_NONE;
    }
    /* the app's cleanup raised: that error comes out where the app is awaited, and an
     * Exception is recorded as a failed request there, as the ``async def`` did */
    PyObject *result = NULL;
    call_ended(self, PYGEN_ERROR, &result);
    return NULL;
}

static PyObject *
call_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int
call_traverse(Call *self, visitproc visit, void *arg)
{
    Py_VISIT(self->inner);
    Py_VISIT(self->middleware);
    Py_VISIT(self->cell);
    Py_VISIT(self->scope);
    Py_VISIT(self->watch);
    return 0;
}

static int
call_clear(Call *self)
{
    Py_CLEAR(self->inner);
    Py_CLEAR(self->middleware);
    Py_CLEAR(self->cell);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->watch);
    return 0;
}

/* No finalizer: a Call dropped before its end lets go of the app's coroutine, whose own
 * finalizer closes it (an error of the app's cleanup is then reported as unraisable, not
 * recorded: the ``async def``'s coroutine, closed by its finalizer, recorded an Exception
 * raised there as a failed request). A Call closing the app's coroutine from a finalizer of
 * its own made CPython 3.11 crash when the two were collected in a cycle and the app ignored
 * the GeneratorExit (so does a Python coroutine made after the app's that awaits it). */
static void
call_dealloc(Call *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    call_clear(self);
    PyObject_GC_Del(self);
}

static PyAsyncMethods call_as_async = {
    .am_await = call_await,
    .am_send = (sendfunc)call_am_send,
};

static PyMethodDef call_methods[] = {
    {"send", (PyCFunction)call_send_method, METH_O, "send(value): resume the request's coroutine"},
    {"throw", (PyCFunction)(void (*)(void))call_throw, METH_FASTCALL, "throw(exception): raise it in the request"},
    {"close", (PyCFunction)call_close, METH_NOARGS, "close(): abandon the request (nothing is recorded)"},
    {NULL},
};

static PyMemberDef call_members[] = {
    {"cr_await", T_OBJECT, offsetof(Call, inner), READONLY, "the app's coroutine, None once it ended"},
    {"cr_running", T_BOOL, offsetof(Call, running), READONLY, "True while it runs"},
    {NULL},
};

/* what inspect.getcoroutinestate() and anyio read of a coroutine */
static PyObject *
call_get_suspended(Call *self, void *closure)
{
    return PyBool_FromLong(self->inner != NULL && self->started && !self->running);
}

/* the app's coroutine's frame while the request has not ended (None for an awaitable that
 * has none), None after: getcoroutinestate() says CLOSED only for None */
static PyObject *
call_get_frame(Call *self, void *closure)
{
    if (self->inner == NULL)
        Py_RETURN_NONE;
    PyObject *frame = PyObject_GetAttrString(self->inner, PyCoro_CheckExact(self->inner) ? "cr_frame" : "gi_frame");
    if (frame == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return frame;
}

static PyObject *
call_get_name(Call *self, void *qualified)
{
    return PyUnicode_FromString(qualified ? "MaltiMiddleware.__call__" : "__call__");
}

static PyObject *
call_get_origin(Call *self, void *closure)
{
    Py_RETURN_NONE; /* (origin tracking of sys.set_coroutine_origin_tracking_depth: not kept) */
}

static PyGetSetDef call_getset[] = {
    {"cr_origin", (getter)call_get_origin, NULL, "None", NULL},
    {"cr_suspended", (getter)call_get_suspended, NULL, "True while it waits at an await", NULL},
    {"cr_frame", (getter)call_get_frame, NULL, "the app's coroutine's frame until the request ends", NULL},
    {"__name__", (getter)call_get_name, NULL, "as a coroutine's, for reprs", NULL},
    {"__qualname__", (getter)call_get_name, NULL, "as a coroutine's, for reprs", (void *)1},
    {NULL},
};

static PyTypeObject CallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "malti_sdk._speedups.Call",
    .tp_basicsize = sizeof(Call),
    .tp_dealloc = (destructor)call_dealloc,
    .tp_as_async = &call_as_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One HTTP request through MaltiMiddleware: awaits the app, then records the request.",
    .tp_traverse = (traverseproc)call_traverse,
    .tp_clear = (inquiry)call_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)call_iternext,
    .tp_weaklistoffset = offsetof(Call, weakreflist),
    .tp_methods = call_methods,
    .tp_members = call_members,
    .tp_getset = call_getset,
};

/* What ``await obj`` resumes (CPython's _PyCoro_GetAwaitableIter): a coroutine itself, a
 * generator-based coroutine itself, else what obj.__await__() returns, which must be an
 * iterator and not a coroutine. A new reference (awaitable's is left as it was), or NULL with
 * the TypeError ``await`` raises. */
static PyObject *
awaitable_iter(PyObject *awaitable)
{
    if (PyCoro_CheckExact(awaitable))
        return Py_NewRef(awaitable);
    if (PyGen_CheckExact(awaitable)) { /* @types.coroutine: CO_ITERABLE_COROUTINE */
        PyObject *code = PyObject_GetAttrString(awaitable, "gi_code");
        long flags = 0;
        if (code != NULL) {
            PyObject *value = PyObject_GetAttrString(code, "co_flags");
            flags = value == NULL ? 0 : PyLong_AsLong(value);
            Py_XDECREF(value);
            Py_DECREF(code);
        }
        if (PyErr_Occurred())
            return NULL;
        if (flags & CO_ITERABLE_COROUTINE)
            return Py_NewRef(awaitable);
    }
    unaryfunc getter = Py_TYPE(awaitable)->tp_as_async != NULL ? Py_TYPE(awaitable)->tp_as_async->am_await : NULL;
    if (getter == NULL) {
        PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression", Py_TYPE(awaitable)->tp_name);
        return NULL;
    }
    PyObject *iterator = getter(awaitable);
    if (iterator == NULL)
        return NULL;
    if (PyCoro_CheckExact(iterator)) {
        PyErr_SetString(PyExc_TypeError, "__await__() returned a coroutine");
        Py_DECREF(iterator);
        return NULL;
    }
    if (!PyIter_Check(iterator)) {
        PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%.100s'", Py_TYPE(iterator)->tp_name);
        Py_DECREF(iterator);
        return NULL;
    }
    return iterator;
}

/* make_call(middleware, app, cell, [scope, receive, send]): an HTTP request's Call (other
 * scopes: middleware._serve). app and cell (middleware._cell) are the caller's: strong
 * references it holds across this call. */
static PyObject *
make_call(PyObject *middleware, PyObject *app, PyObject *cell, PyObject *const *args)
{
    if (UNLIKELY(raise_later == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "malti_sdk._speedups.setup() was not called");
        return NULL;
    }
    PyObject *scope = args[0]; /* args: scope, receive, send */
    PyObject *type = mapping_item(scope, s_type);
    int http = UNLIKELY(type == NULL) ? -1
               : LIKELY(type == s_http) ? 1
                                        : PyObject_RichCompareBool(type, s_http, Py_EQ);
    Py_XDECREF(type);
    if (UNLIKELY(http < 0)) /* the Python side raises it when awaited, as the ``async def`` did */
        PyErr_Clear();
    if (UNLIKELY(http <= 0)) { /* lifespan, websocket, anything else: the Python side */
        PyObject *serve_args[4] = {middleware, scope, args[1], args[2]};
        return PyObject_VectorcallMethod(s_serve, serve_args, 4, NULL);
    }
    PyObject *watch = watch_new(args[2], scope);
    if (UNLIKELY(watch == NULL))
        return NULL;
    PyObject *app_args[3] = {scope, args[1], watch};
    PyObject *inner = PyObject_Vectorcall(app, app_args, 3, NULL);
    if (UNLIKELY(inner != NULL && !PyCoro_CheckExact(inner) && !Py_IS_TYPE(inner, &CallType)))
        Py_SETREF(inner, awaitable_iter(inner)); /* what ``await`` would resume */
    if (UNLIKELY(inner == NULL)) {
        /* the app raised before returning its coroutine, or returned what cannot be awaited:
         * raised when awaited, and recorded as a failed request, as the ``async def`` did */
        PyObject *error = take_raised();
        inner = error == NULL ? NULL : PyObject_CallOneArg(raise_later, error);
        Py_XDECREF(error);
    }
    if (UNLIKELY(inner == NULL)) {
        Py_DECREF(watch);
        return NULL;
    }
    Call *self = PyObject_GC_New(Call, &CallType);
    if (UNLIKELY(self == NULL)) {
        Py_DECREF(inner);
        Py_DECREF(watch);
        return NULL;
    }
    self->inner = inner;
    self->middleware = Py_NewRef(middleware);
    self->cell = Py_NewRef(cell);
    self->scope = Py_NewRef(scope);
    self->watch = watch;
    self->running = 0;
    self->started = 0;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* --------------------------------------------------------- Middleware, CallMethod */

/* The base of MaltiMiddleware with this module: its ``app`` and ``_cell`` kept in the
 * object itself, so that __call__ (a CallMethod below) reads them without a look-up. */
typedef struct {
    PyObject_HEAD
    PyObject *app;
    PyObject *cell; /* [snapshot or None]; NULL (read as None) until made */
} Middleware;

static int
middleware_traverse(Middleware *self, visitproc visit, void *arg)
{
    Py_VISIT(self->app);
    Py_VISIT(self->cell);
    return 0;
}

static int
middleware_clear(Middleware *self)
{
    Py_CLEAR(self->app);
    Py_CLEAR(self->cell);
    return 0;
}

static void
middleware_dealloc(Middleware *self)
{
    PyObject_GC_UnTrack(self);
    middleware_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* object.__new__ (without the arguments, which __init__ takes): it also lays out a
 * subclass instance's attributes inline, as for any class (3.11 and 3.12; 3.13 keeps a
 * __dict__ for a class whose base adds fields of its own) */
static PyObject *
middleware_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *none = PyTuple_New(0);
    if (none == NULL)
        return NULL;
    PyObject *self = PyBaseObject_Type.tp_new(type, none, NULL);
    Py_DECREF(none);
    return self;
}

static PyMemberDef middleware_members[] = {
    {"app", T_OBJECT_EX, offsetof(Middleware, app), 0, "the ASGI application"},
    {"_cell", T_OBJECT, offsetof(Middleware, cell), 0, "[snapshot or None], read by each request's Call"},
    {NULL},
};

static PyTypeObject MiddlewareType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "malti_sdk._speedups.Middleware",
    .tp_basicsize = sizeof(Middleware),
    .tp_dealloc = (destructor)middleware_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Base of MaltiMiddleware with the compiled module: app and _cell kept in the object.",
    .tp_traverse = (traverseproc)middleware_traverse,
    .tp_clear = (inquiry)middleware_clear,
    .tp_members = middleware_members,
    .tp_new = middleware_new,
};

/* MaltiMiddleware.__call__ with this module: a method descriptor (bound like a function,
 * with attributes, so that asyncio, inspect and uvicorn take it for a coroutine function)
 * whose call is make_call() on the middleware's own fields. A Python function there cost
 * a frame and three attribute reads per request. Anything but (middleware, scope, receive,
 * send) positionally goes to that Python function (its __wrapped__), which answers as it did. */
typedef struct {
    PyObject_HEAD
    PyObject *dict;
    vectorcallfunc vectorcall;
    PyObject *weakreflist;
} CallMethod;

static PyObject *
call_method_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (LIKELY(nargs == 4 && kwnames == NULL && PyObject_TypeCheck(args[0], &MiddlewareType))) {
        Middleware *middleware = (Middleware *)args[0];
        if (LIKELY(middleware->app != NULL)) {
            /* strong references: make_call may run Python code (the scope's look-ups, the app)
             * that replaces the middleware's app or _cell */
            PyObject *app = Py_NewRef(middleware->app);
            PyObject *cell = Py_NewRef(middleware->cell ? middleware->cell : Py_None);
            PyObject *result = make_call(args[0], app, cell, args + 1);
            Py_DECREF(app);
            Py_DECREF(cell);
            return result;
        }
        /* no app set (a subclass that skipped __init__): raise what self.app raises */
        PyObject *app = PyObject_GetAttrString(args[0], "app");
        if (app == NULL)
            return NULL;
        Py_DECREF(app); /* found some other way (a subclass's property): the Python path */
    }
    else if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "MaltiMiddleware.__call__() needs the middleware");
        return NULL;
    }
    /* the Python function this stands for (__wrapped__): its answers, its errors' names */
    PyObject *function = PyObject_GetAttr(op, s_wrapped);
    if (function == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(function, args, nargsf, kwnames);
    Py_DECREF(function);
    return result;
}

static PyObject *
call_method_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "CallMethod() takes no arguments");
        return NULL;
    }
    CallMethod *self = (CallMethod *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->vectorcall = call_method_vectorcall;
    return (PyObject *)self;
}

static PyObject *
call_method_get(PyObject *self, PyObject *instance, PyObject *owner)
{
    if (instance == NULL || instance == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, instance);
}

static PyObject *
call_method_repr(PyObject *self)
{
    PyObject *name = PyObject_GetAttrString(self, "__qualname__");
    if (name == NULL) {
        PyErr_Clear();
        return PyUnicode_FromString("<compiled function __call__>");
    }
    PyObject *text = PyUnicode_FromFormat("<compiled function %S>", name);
    Py_DECREF(name);
    return text;
}

static int
call_method_traverse(CallMethod *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    return 0;
}

static int
call_method_clear(CallMethod *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void
call_method_dealloc(CallMethod *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    call_method_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyGetSetDef call_method_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyTypeObject CallMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "malti_sdk._speedups.CallMethod",
    .tp_basicsize = sizeof(CallMethod),
    .tp_dealloc = (destructor)call_method_dealloc,
    .tp_repr = call_method_repr,
    .tp_vectorcall_offset = offsetof(CallMethod, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "MaltiMiddleware.__call__ with the compiled module (see malti_sdk/_middleware.py).",
    .tp_traverse = (traverseproc)call_method_traverse,
    .tp_clear = (inquiry)call_method_clear,
    .tp_descr_get = call_method_get,
    .tp_dictoffset = offsetof(CallMethod, dict),
    .tp_weaklistoffset = offsetof(CallMethod, weakreflist),
    .tp_getset = call_method_getset,
    .tp_new = call_method_new,
};

/* ------------------------------------------------------------------------ encode */

typedef struct {
    char *data;
    size_t length, capacity;
} Text;

static int
text_reserve(Text *text, size_t extra)
{
    if (text->length + extra <= text->capacity)
        return 0;
    size_t capacity = text->capacity ? text->capacity : 4096;
    while (capacity < text->length + extra)
        capacity *= 2;
    char *data = PyMem_Realloc(text->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    text->data = data;
    text->capacity = capacity;
    return 0;
}

static char *
put_digits(char *out, unsigned long long value)
{
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (count)
        *out++ = digits[--count];
    return out;
}

static int
put_literal(Text *text, const char *literal, size_t length)
{
    if (text_reserve(text, length) < 0)
        return -1;
    memcpy(text->data + text->length, literal, length);
    text->length += length;
    return 0;
}

static int
put_ascii(Text *text, PyObject *ascii)
{
    return put_literal(text, (const char *)PyUnicode_1BYTE_DATA(ascii), (size_t)PyUnicode_GET_LENGTH(ascii));
}

/* '%.3f' % value, as Python formats it. Milliseconds below 1e9 whose thousandths are not
 * within 0.001 of a tie are rounded here (the product's error is below 0.0002, so the
 * nearest integer is the exact one); anything else goes through Python's own formatter. */
static int
put_milliseconds(Text *text, double value)
{
    if (value >= 0.0 && value < 1e9 && !signbit(value)) {
        double thousandths = value * 1000.0;
        double nearest = nearbyint(thousandths);
        if (fabs(thousandths - nearest) < 0.499) {
            if (text_reserve(text, 32) < 0)
                return -1;
            unsigned long long whole = (unsigned long long)nearest;
            char *out = put_digits(text->data + text->length, whole / 1000);
            unsigned int fraction = (unsigned int)(whole % 1000);
            out[0] = '.';
            out[1] = (char)('0' + fraction / 100);
            out[2] = (char)('0' + fraction / 10 % 10);
            out[3] = (char)('0' + fraction % 10);
            text->length = (size_t)(out + 4 - text->data);
            return 0;
        }
    }
    char *formatted = PyOS_double_to_string(value, 'f', 3, 0, NULL);
    if (formatted == NULL)
        return -1;
    int result = put_literal(text, formatted, strlen(formatted));
    PyMem_Free(formatted);
    return result;
}

/* a callback's answer: an ASCII str (a new reference), else NULL (error set, or none: fall back) */
static PyObject *
ascii_text(PyObject *value)
{
    if (value == NULL)
        return NULL;
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

#define MEMO_SLOTS 16

/* What encoding a run of rows needs from RecordEncoder, the stamp of the last second, and
 * the prefixes found in this run by the key fields' objects (a tuple key and a dict lookup
 * cost more than the rest of a record: most rows of a run repeat a few keys). */
typedef struct {
    PyObject *prefixes, *make_prefix, *make_stamp;
    PyObject *stamp; /* owned */
    long long last_second;
    struct {
        /* borrowed from a row of the run's rows tuple, which the call holds */
        PyObject *method, *endpoint, *status, *consumer, *context;
        PyObject *prefix; /* owned */
    } memo[MEMO_SLOTS];
} Encoding;

static void
encoding_clear(Encoding *encoding)
{
    Py_CLEAR(encoding->stamp);
    for (int i = 0; i < MEMO_SLOTS; i++)
        Py_CLEAR(encoding->memo[i].prefix);
}

/* the same consumer: one object, or equal bytes (a header's value) or equal str */
static int
same_consumer(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (PyBytes_CheckExact(a) && PyBytes_CheckExact(b))
        return PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b) &&
               memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(a)) == 0;
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b))
        return PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
               memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b),
                      (size_t)PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a)) == 0;
    return 0;
}

/* the prefix of a row's key (a new reference): from this run's memo when the same objects
 * (or an equal consumer) were seen, else RecordEncoder's dict or its make_prefix; NULL
 * with an error set */
static PyObject *
row_prefix(Encoding *encoding, PyObject *row)
{
    PyObject *method = PyTuple_GET_ITEM(row, 0), *endpoint = PyTuple_GET_ITEM(row, 1),
             *status = PyTuple_GET_ITEM(row, 2), *consumer = PyTuple_GET_ITEM(row, 4),
             *context = PyTuple_GET_ITEM(row, 5);
    size_t slot = ((uintptr_t)endpoint >> 4) % MEMO_SLOTS;
    if (encoding->memo[slot].prefix != NULL && encoding->memo[slot].endpoint == endpoint &&
        encoding->memo[slot].method == method && encoding->memo[slot].status == status &&
        encoding->memo[slot].context == context && same_consumer(encoding->memo[slot].consumer, consumer))
        return Py_NewRef(encoding->memo[slot].prefix);
    PyObject *key = PyTuple_Pack(5, method, endpoint, status, consumer, context);
    if (key == NULL)
        return NULL;
    PyObject *prefix = PyDict_GetItemWithError(encoding->prefixes, key);
    if (prefix != NULL)
        Py_INCREF(prefix);
    else if (!PyErr_Occurred())
        prefix = PyObject_CallOneArg(encoding->make_prefix, key);
    Py_DECREF(key);
    if (prefix != NULL) {
        encoding->memo[slot].method = method;
        encoding->memo[slot].endpoint = endpoint;
        encoding->memo[slot].status = status;
        encoding->memo[slot].consumer = consumer;
        encoding->memo[slot].context = context;
        Py_XSETREF(encoding->memo[slot].prefix, Py_NewRef(prefix));
    }
    return prefix;
}

/* Where the parts of one encoded record are in the text: the prefix (memoised per method,
 * endpoint, status, consumer, context), then the response time, then the created_at part
 * up to the microseconds (',"created_at":"' + the memoised second + '.'), then the rest. */
typedef struct {
    size_t prefix_at, prefix_end, stamp_at, stamp_end, end;
    const void *prefix_id; /* the prefix object's address: a hint for the gzip writer, never dereferenced */
} Parts;

/* One row's JSON object appended to text: 0, or 1 when the row is not of the usual shape
 * (the Python encoder does the chunk), or -1 with an error set. */
static int
put_row(Text *text, PyObject *row, Encoding *encoding, Parts *parts)
{
    if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 7 || !PyFloat_CheckExact(PyTuple_GET_ITEM(row, 3)) ||
        !PyFloat_CheckExact(PyTuple_GET_ITEM(row, 6)))
        return 1;
    double created = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(row, 6));
    if (!isfinite(created) || fabs(created) >= 1e15)
        return 1;
    PyObject *prefix = row_prefix(encoding, row);
    if (prefix == NULL)
        return -1;
    prefix = ascii_text(prefix);
    if (prefix == NULL)
        return PyErr_Occurred() ? -1 : 1;
    long long second = (long long)created; /* int(created): toward zero */
    if (encoding->stamp == NULL || second != encoding->last_second) {
        PyObject *second_object = PyLong_FromLongLong(second);
        PyObject *made = second_object ? PyObject_CallOneArg(encoding->make_stamp, second_object) : NULL;
        Py_XDECREF(second_object);
        made = ascii_text(made);
        if (made == NULL) {
            Py_DECREF(prefix);
            return PyErr_Occurred() ? -1 : 1;
        }
        Py_XSETREF(encoding->stamp, made);
        encoding->last_second = second;
    }
    long long micro = (long long)((created - (double)second) * 1e6); /* '%06d' of a float: truncated */
    parts->prefix_at = text->length;
    parts->prefix_id = prefix;
    int failed = put_ascii(text, prefix) < 0;
    Py_DECREF(prefix);
    if (failed)
        return -1;
    parts->prefix_end = text->length;
    if (put_milliseconds(text, PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(row, 3))) < 0)
        return -1;
    parts->stamp_at = text->length;
    if (put_literal(text, ",\"created_at\":\"", 15) < 0 || put_ascii(text, encoding->stamp) < 0 ||
        text_reserve(text, 32) < 0)
        return -1;
    char *out = text->data + text->length;
    if (micro >= 0 && micro < 1000000) {
        *out++ = '.';
        for (int digit = 5; digit >= 0; digit--) {
            out[digit] = (char)('0' + micro % 10);
            micro /= 10;
        }
        out += 6;
    }
    else
        out += PyOS_snprintf(out, 32, ".%06lld", micro); /* begins with '.' too */
    parts->stamp_end = parts->stamp_at + 15 + (size_t)PyUnicode_GET_LENGTH(encoding->stamp) + 1; /* with the '.' */
    *out++ = 'Z';
    *out++ = '"';
    *out++ = '}';
    text->length = (size_t)(out - text->data);
    parts->end = text->length;
    return 0;
}

/* the arguments shared by encode() and GzipWriter.write_rows(): rows as a tuple (a new
 * reference: a snapshot the callbacks cannot change under us) or NULL (None to return) */
static PyObject *
rows_snapshot(PyObject *rows, PyObject *prefixes)
{
    if (!PyDict_CheckExact(prefixes) || (!PyList_CheckExact(rows) && !PyTuple_CheckExact(rows)))
        return NULL;
    /* nothing the callbacks do to a list (or find through gc) can free a row still read */
    return PyList_CheckExact(rows) ? PyList_AsTuple(rows) : Py_NewRef(rows);
}

/* rows (a tuple) appended to text, comma-separated (also before the first when
 * comma_first), with RecordEncoder's prefixes, make_prefix and make_stamp in that order in
 * `encoder`; each row's parts in parts[i] when parts is not NULL. put_row's answer for the
 * first row it does not write (1: left to Python, -1: error), else 0. */
static int
put_rows(Text *text, PyObject *rows, PyObject *const *encoder, int comma_first, Parts *parts)
{
    Encoding encoding = {encoder[0], encoder[1], encoder[2], NULL, 0, {{0}}};
    Parts scratch;
    int status = 0;
    Py_ssize_t count = PyTuple_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < count && status == 0; i++) {
        if ((i || comma_first) && put_literal(text, ",", 1) < 0)
            status = -1;
        else
            status = put_row(text, PyTuple_GET_ITEM(rows, i), &encoding, parts ? &parts[i] : &scratch);
    }
    encoding_clear(&encoding);
    return status;
}

static PyObject *
speedups_encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode(rows, prefixes, make_prefix, make_stamp)");
        return NULL;
    }
    PyObject *rows = rows_snapshot(args[0], args[1]);
    if (rows == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Text text = {NULL, 0, 0};
    int status = put_rows(&text, rows, args + 1, 0, NULL);
    Py_DECREF(rows);
    PyObject *result = NULL;
    if (status == 1)
        result = Py_NewRef(Py_None);
    else if (status == 0) {
        result = PyUnicode_New((Py_ssize_t)text.length, 127);
        if (result != NULL && text.length)
            memcpy(PyUnicode_1BYTE_DATA(result), text.data, text.length);
    }
    PyMem_Free(text.data);
    return result;
}

/* -------------------------------------------------------------------- gzip writer */

/* A gzip member (RFC 1952) of one fixed-Huffman deflate block (RFC 1951), written as the
 * text is encoded. zlib at level 1 spends most of delivery's CPU looking for repeats the
 * encoder already knows: a record's prefix is the text of an earlier record with the same
 * prefix, and its created_at part up to the microseconds that of the record before it
 * in the same second. Those become back-references (after a memcmp against the text
 * itself: an address remembered is only a hint), everything else literals. A tenth of
 * zlib's instructions at level 1 and a third of its time (the CRC-32 is most of what is
 * left), for about twice its output (some 21 bytes a record instead of 9). Any inflater reads it: the tests
 * check the text against the Python encoder's through zlib, and through gzip(1). */

#define WINDOW 32768
#define MIN_MATCH 3
#define MAX_MATCH 258
#define PREFIX_SLOTS 256

static uint32_t crc_table[8][256]; /* slicing by 8, where there is no carry-less multiply */
static uint16_t literal_code[288]; /* fixed Huffman codes, bit-reversed for LSB-first output */
static uint8_t literal_bits[288];
static uint8_t distance_code[30];

static unsigned
reverse_bits(unsigned code, int bits)
{
    unsigned reversed = 0;
    for (int i = 0; i < bits; i++, code >>= 1)
        reversed = (reversed << 1) | (code & 1);
    return reversed;
}

static void
gzip_tables_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][n] = c;
    }
    for (int n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xFF];
    for (int symbol = 0; symbol < 288; symbol++) {
        unsigned code;
        int bits;
        if (symbol < 144)
            code = 0x30 + symbol, bits = 8;
        else if (symbol < 256)
            code = 0x190 + (symbol - 144), bits = 9;
        else if (symbol < 280)
            code = symbol - 256, bits = 7;
        else
            code = 0xC0 + (symbol - 280), bits = 8;
        literal_code[symbol] = (uint16_t)reverse_bits(code, bits);
        literal_bits[symbol] = (uint8_t)bits;
    }
    for (int d = 0; d < 30; d++)
        distance_code[d] = (uint8_t)reverse_bits((unsigned)d, 5);
}

/* CRC-32 (gzip's) with x86's carry-less multiply: 64 bytes folded at a time, as in "Fast
 * CRC Computation for Generic Polynomials Using PCLMULQDQ" (Intel, 2009), with the
 * constants of its bit-reflected form for this polynomial; the same folding as the Linux
 * kernel's and Chromium zlib's. A twentieth of the table's instructions a byte, and no
 * 8 KB table pulled into the data cache with every batch (the request path's data then
 * stays there). Chosen at import by the CPU (crc_simd); the table serves everywhere else. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_CRC_SIMD 1

/* the CRC register (not inverted) over length bytes, length >= 64 and a multiple of 16 */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc32_fold(uint32_t crc, const unsigned char *data, size_t length)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(data + 0));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(data + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(data + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(data + 48));
    __m128i t1, t2, t3, t4;
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    data += 64;
    length -= 64;
    for (; length >= 64; data += 64, length -= 64) { /* four lanes of 128 bits */
        t1 = _mm_clmulepi64_si128(x1, k1k2, 0x00);
        t2 = _mm_clmulepi64_si128(x2, k1k2, 0x00);
        t3 = _mm_clmulepi64_si128(x3, k1k2, 0x00);
        t4 = _mm_clmulepi64_si128(x4, k1k2, 0x00);
        x1 = _mm_xor_si128(_mm_clmulepi64_si128(x1, k1k2, 0x11), t1);
        x2 = _mm_xor_si128(_mm_clmulepi64_si128(x2, k1k2, 0x11), t2);
        x3 = _mm_xor_si128(_mm_clmulepi64_si128(x3, k1k2, 0x11), t3);
        x4 = _mm_xor_si128(_mm_clmulepi64_si128(x4, k1k2, 0x11), t4);
        x1 = _mm_xor_si128(x1, _mm_loadu_si128((const __m128i *)(data + 0)));
        x2 = _mm_xor_si128(x2, _mm_loadu_si128((const __m128i *)(data + 16)));
        x3 = _mm_xor_si128(x3, _mm_loadu_si128((const __m128i *)(data + 32)));
        x4 = _mm_xor_si128(x4, _mm_loadu_si128((const __m128i *)(data + 48)));
    }
    /* the four lanes into one, then 16 bytes at a time */
    __m128i lanes[3] = {x2, x3, x4};
    for (int i = 0; i < 3; i++) {
        t1 = _mm_clmulepi64_si128(x1, k3k4, 0x00);
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x11), lanes[i]), t1);
    }
    for (; length >= 16; data += 16, length -= 16) {
        t1 = _mm_clmulepi64_si128(x1, k3k4, 0x00);
        x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x11),
                                         _mm_loadu_si128((const __m128i *)data)), t1);
    }
    /* 128 bits to 64, then Barrett's reduction to 32 */
    t2 = _mm_clmulepi64_si128(x1, k3k4, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), t2);
    t2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5k0, 0x00), t2);
    t2 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10);
    t2 = _mm_clmulepi64_si128(_mm_and_si128(t2, low32), poly, 0x00);
    x1 = _mm_xor_si128(x1, t2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

static int crc_simd; /* crc32_fold() may run here */

static void
crc_simd_init(void)
{
#ifdef HAVE_CRC_SIMD
    __builtin_cpu_init();
    crc_simd = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
}

static uint32_t
crc32_update(uint32_t crc, const unsigned char *data, size_t length, int simd)
{
    crc = ~crc;
#ifdef HAVE_CRC_SIMD
    if (simd && length >= 64) {
        size_t folded = length & ~(size_t)15;
        crc = crc32_fold(crc, data, folded);
        data += folded;
        length -= folded;
    }
#else
    (void)simd;
#endif
    while (length >= 8) {
        uint32_t low = crc ^ ((uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                              (uint32_t)data[3] << 24);
        crc = crc_table[7][low & 0xFF] ^ crc_table[6][(low >> 8) & 0xFF] ^ crc_table[5][(low >> 16) & 0xFF] ^
              crc_table[4][low >> 24] ^ crc_table[3][data[4]] ^ crc_table[2][data[5]] ^ crc_table[1][data[6]] ^
              crc_table[0][data[7]];
        data += 8;
        length -= 8;
    }
    while (length--)
        crc = crc_table[0][(crc ^ *data++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* crc32(data, value=0, simd=True): the tests' way in to both ways of computing it */
static PyObject *
speedups_crc32(PyObject *module, PyObject *args)
{
    Py_buffer view;
    unsigned int value = 0;
    int simd = 1;
    if (!PyArg_ParseTuple(args, "y*|Ip:crc32", &view, &value, &simd))
        return NULL;
    uint32_t crc = crc32_update(value, view.buf, (size_t)view.len, simd && crc_simd);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

typedef struct {
    PyObject_HEAD
    Text window;              /* the text written, from absolute offset `base` on */
    unsigned long long base;  /* absolute offset of window.data[0] */
    unsigned long long total; /* bytes of text written in all */
    uint32_t crc;
    Text out;                 /* the gzip member so far */
    uint64_t bits;            /* output bits not yet in `out`, LSB first */
    int bit_count;
    int finished;
    int busy; /* in write_rows(), whose callbacks may run any code: no other call meanwhile */
    struct {
        const void *id;
        unsigned long long at;
    } prefix_seen[PREFIX_SLOTS];   /* where a prefix object's text was last written */
    unsigned long long stamp_seen; /* where the last created_at part was written (0: none yet) */
} GzipWriter;

static PyTypeObject GzipWriterType;

/* the low 32 bits, least significant byte first; the byte after them */
static inline unsigned char *
store32(unsigned char *out, uint64_t bits)
{
    out[0] = (unsigned char)bits;
    out[1] = (unsigned char)(bits >> 8);
    out[2] = (unsigned char)(bits >> 16);
    out[3] = (unsigned char)(bits >> 24);
    return out + 4;
}

static inline int
put_bits(GzipWriter *self, uint64_t value, int count)
{
    self->bits |= value << self->bit_count;
    self->bit_count += count;
    if (self->bit_count >= 32) {
        if (text_reserve(&self->out, 4) < 0)
            return -1;
        store32((unsigned char *)self->out.data + self->out.length, self->bits);
        self->out.length += 4;
        self->bits >>= 32;
        self->bit_count -= 32;
    }
    return 0;
}

static int
put_literals(GzipWriter *self, const unsigned char *data, size_t length)
{
    /* at most 9 bits a literal: room reserved once, the bits kept in locals */
    if (text_reserve(&self->out, length * 9 / 8 + 8) < 0)
        return -1;
    uint64_t bits = self->bits;
    int count = self->bit_count;
    unsigned char *out = (unsigned char *)self->out.data + self->out.length;
    for (size_t i = 0; i < length; i++) {
        bits |= (uint64_t)literal_code[data[i]] << count;
        count += literal_bits[data[i]];
        if (count >= 32) {
            out = store32(out, bits);
            bits >>= 32;
            count -= 32;
        }
    }
    self->bits = bits;
    self->bit_count = count;
    self->out.length = (size_t)(out - (unsigned char *)self->out.data);
    return 0;
}

/* one back-reference of MIN_MATCH..MAX_MATCH bytes at distance 1..WINDOW */
static int
put_match(GzipWriter *self, unsigned length, unsigned distance)
{
    int symbol, extra_bits = 0;
    unsigned extra = 0, x = length - 3;
    if (length == MAX_MATCH)
        symbol = 285;
    else if (x < 8)
        symbol = 257 + (int)x;
    else {
        int top = 31 - __builtin_clz(x); /* 3..7 */
        symbol = 257 + 4 * (top - 1) + (int)((x >> (top - 2)) & 3);
        extra_bits = top - 2;
        extra = x & ((1u << extra_bits) - 1);
    }
    if (put_bits(self, literal_code[symbol], literal_bits[symbol]) < 0 ||
        (extra_bits && put_bits(self, extra, extra_bits) < 0))
        return -1;
    x = distance - 1;
    int code;
    extra_bits = 0;
    if (x < 4)
        code = (int)x;
    else {
        int top = 31 - __builtin_clz(x); /* 2..14 */
        code = 2 * top + (int)((x >> (top - 1)) & 1);
        extra_bits = top - 1;
        extra = x & ((1u << extra_bits) - 1);
    }
    if (put_bits(self, distance_code[code], 5) < 0 || (extra_bits && put_bits(self, extra, extra_bits) < 0))
        return -1;
    return 0;
}

/* the text at absolute offset `at` (already in the window), as a back-reference to the
 * same bytes at `seen` when they are there and within reach, else as literals */
static int
put_part(GzipWriter *self, unsigned long long at, size_t length, unsigned long long seen)
{
    const unsigned char *data = (const unsigned char *)self->window.data + (at - self->base);
    if (length >= MIN_MATCH && seen >= self->base && seen < at && at - seen <= WINDOW &&
        memcmp((const unsigned char *)self->window.data + (seen - self->base), data, length) == 0) {
        unsigned distance = (unsigned)(at - seen);
        while (length) {
            size_t take = length > MAX_MATCH ? MAX_MATCH : length;
            if (length > take && length - take < MIN_MATCH)
                take = length - MIN_MATCH; /* leave a last piece long enough to be a reference */
            if (put_match(self, (unsigned)take, distance) < 0)
                return -1;
            length -= take;
        }
        return 0;
    }
    return put_literals(self, data, length);
}

/* the window's new text [from, window.length) counted in; the window trimmed to its last
 * WINDOW bytes once it holds three times that */
static void
text_written(GzipWriter *self, size_t from)
{
    self->crc = crc32_update(self->crc, (const unsigned char *)self->window.data + from, self->window.length - from,
                             crc_simd);
    self->total += self->window.length - from;
    if (self->window.length > 3 * WINDOW) {
        size_t drop = self->window.length - WINDOW;
        memmove(self->window.data, self->window.data + drop, WINDOW);
        self->window.length = WINDOW;
        self->base += drop;
    }
}

static PyObject *
gzip_writer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "GzipWriter() takes no arguments");
        return NULL;
    }
    GzipWriter *self = (GzipWriter *)type->tp_alloc(type, 0); /* zeroed */
    if (self == NULL)
        return NULL;
    /* gzip header: deflate, no name, no mtime, OS unknown; then the one block's header
     * (BFINAL=1, BTYPE=01: fixed Huffman codes) */
    static const char header[10] = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 0, '\xff'};
    self->base = 1; /* absolute offsets start at 1, so that 0 means "not seen" */
    if (put_literal(&self->out, header, sizeof(header)) < 0 || put_bits(self, 1 | (1 << 1), 3) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
gzip_writer_dealloc(GzipWriter *self)
{
    PyMem_Free(self->window.data);
    PyMem_Free(self->out.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
gzip_writer_open(GzipWriter *self)
{
    if (self->finished) {
        PyErr_SetString(PyExc_ValueError, "GzipWriter: finish() was called, or a write failed");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "GzipWriter: called from a callback of its own write_rows()");
        return -1;
    }
    return 0;
}

static PyObject *
gzip_writer_write(GzipWriter *self, PyObject *data)
{
    Py_buffer view;
    if (gzip_writer_open(self) < 0 || PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t from = self->window.length;
    int failed = put_literal(&self->window, view.buf, (size_t)view.len) < 0 ||
                 put_literals(self, (const unsigned char *)view.buf, (size_t)view.len) < 0;
    PyBuffer_Release(&view);
    if (failed) {
        self->finished = 1; /* the output may hold part of the data: unusable */
        return NULL;
    }
    text_written(self, from);
    Py_RETURN_NONE;
}

static PyObject *gzip_writer_write_rows_unguarded(GzipWriter *self, PyObject *const *args);

static PyObject *
gzip_writer_write_rows(GzipWriter *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "write_rows(rows, prefixes, make_prefix, make_stamp, comma_first)");
        return NULL;
    }
    if (gzip_writer_open(self) < 0)
        return NULL;
    self->busy = 1;
    PyObject *result = gzip_writer_write_rows_unguarded(self, args);
    self->busy = 0;
    return result;
}

static PyObject *
gzip_writer_write_rows_unguarded(GzipWriter *self, PyObject *const *args)
{
    int comma_first = PyObject_IsTrue(args[4]);
    if (comma_first < 0)
        return NULL;
    PyObject *rows = rows_snapshot(args[0], args[1]);
    if (rows == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(rows);
    Parts *parts = PyMem_Malloc(sizeof(Parts) * (size_t)(count ? count : 1));
    if (parts == NULL) {
        Py_DECREF(rows);
        return PyErr_NoMemory();
    }
    /* the whole chunk's text first: a row left to the Python encoder leaves nothing written */
    size_t from = self->window.length;
    int status = put_rows(&self->window, rows, args + 1, comma_first, parts);
    Py_DECREF(rows);
    if (status != 0) {
        self->window.length = from;
        PyMem_Free(parts);
        if (status < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    unsigned long long base = self->base;
    size_t at = from;
    for (Py_ssize_t i = 0; i < count && status == 0; i++) {
        Parts *p = &parts[i];
        size_t slot = ((uintptr_t)p->prefix_id >> 4) % PREFIX_SLOTS;
        unsigned long long seen = self->prefix_seen[slot].id == p->prefix_id ? self->prefix_seen[slot].at : 0;
        status = put_literals(self, (const unsigned char *)self->window.data + at, p->prefix_at - at) < 0 ||
                 put_part(self, base + p->prefix_at, p->prefix_end - p->prefix_at, seen) < 0 ||
                 put_literals(self, (const unsigned char *)self->window.data + p->prefix_end,
                              p->stamp_at - p->prefix_end) < 0 ||
                 put_part(self, base + p->stamp_at, p->stamp_end - p->stamp_at, self->stamp_seen) < 0 ||
                 put_literals(self, (const unsigned char *)self->window.data + p->stamp_end, p->end - p->stamp_end) < 0;
        self->prefix_seen[slot].id = p->prefix_id;
        self->prefix_seen[slot].at = base + p->prefix_at;
        self->stamp_seen = base + p->stamp_at;
        at = p->end;
    }
    PyMem_Free(parts);
    if (status != 0) {
        self->finished = 1; /* the output holds part of the chunk: unusable */
        return NULL;
    }
    text_written(self, from);
    Py_RETURN_TRUE;
}

static PyObject *
gzip_writer_finish(GzipWriter *self, PyObject *unused)
{
    if (gzip_writer_open(self) < 0)
        return NULL;
    self->finished = 1;
    /* end of block, the last bits padded to a byte, then CRC-32 and length (mod 2^32) */
    if (put_bits(self, literal_code[256], literal_bits[256]) < 0 || text_reserve(&self->out, 16) < 0)
        return NULL;
    unsigned char *out = (unsigned char *)self->out.data + self->out.length;
    for (; self->bit_count > 0; self->bit_count -= 8, self->bits >>= 8)
        *out++ = (unsigned char)self->bits;
    out = store32(out, self->crc);
    out = store32(out, (uint32_t)self->total);
    self->out.length = (size_t)(out - (unsigned char *)self->out.data);
    return PyBytes_FromStringAndSize(self->out.data, (Py_ssize_t)self->out.length);
}

static PyObject *
gzip_writer_get_size(GzipWriter *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->total);
}

static PyMethodDef gzip_writer_methods[] = {
    {"write", (PyCFunction)gzip_writer_write, METH_O, "write(data): bytes of text, as they are"},
    {"write_rows", (PyCFunction)(void (*)(void))gzip_writer_write_rows, METH_FASTCALL,
     "write_rows(rows, prefixes, make_prefix, make_stamp, comma_first) -> False when the Python encoder must "
     "do this chunk (nothing written)"},
    {"finish", (PyCFunction)gzip_writer_finish, METH_NOARGS, "finish() -> the gzip member"},
    {NULL},
};

static PyGetSetDef gzip_writer_getset[] = {
    {"size", (getter)gzip_writer_get_size, NULL, "bytes of text written", NULL},
    {NULL},
};

static PyTypeObject GzipWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "malti_sdk._speedups.GzipWriter",
    .tp_basicsize = sizeof(GzipWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "GzipWriter(): a gzip member of encoded rows (see the comment in _speedups.c)",
    .tp_new = gzip_writer_new,
    .tp_dealloc = (destructor)gzip_writer_dealloc,
    .tp_methods = gzip_writer_methods,
    .tp_getset = gzip_writer_getset,
};

static PyObject *
speedups_setup(PyObject *module, PyObject *args)
{
    PyObject *methods, *headers, *anon, *last, *append, *namespace, *time_function, *raiser;
    if (!PyArg_ParseTuple(args, "O!O!UOOO!OO:setup", &PyDict_Type, &methods, &PyDict_Type, &headers, &anon, &last,
                          &append, &PyDict_Type, &namespace, &time_function, &raiser))
        return NULL;
    Py_XSETREF(known_methods, Py_NewRef(methods));
    Py_XSETREF(consumer_headers, Py_NewRef(headers));
    for (int i = 0; i < HEADER_NAMES; i++)
        Py_CLEAR(header_names[i].name);
    header_name_count = 0;
    PyObject *name, *rank;
    Py_ssize_t position = 0;
    while (PyDict_Next(headers, &position, &name, &rank)) {
        long value = PyLong_CheckExact(rank) ? PyLong_AsLong(rank) : -1;
        if (value == -1 && PyErr_Occurred())
            PyErr_Clear();
        if (header_name_count == HEADER_NAMES || !PyBytes_CheckExact(name) || value < 0) {
            header_name_count = -1; /* not a plain table of names: look each header up */
            break;
        }
        header_names[header_name_count].name = Py_NewRef(name);
        header_names[header_name_count].rank = value;
        header_name_count++;
    }
    Py_XSETREF(anonymous, Py_NewRef(anon));
    Py_XSETREF(send_last, Py_NewRef(last));
    Py_XSETREF(row_append, Py_NewRef(append));
    Py_XSETREF(clock_namespace, Py_NewRef(namespace));
    Py_XSETREF(real_time, Py_NewRef(time_function));
    Py_XSETREF(raise_later, Py_NewRef(raiser));
    Py_RETURN_NONE;
}

static PyMethodDef speedups_methods[] = {
    {"watch", (PyCFunction)(void (*)(void))speedups_watch, METH_FASTCALL,
     "watch(send, scope): the send to hand to the app, noting status and end"},
    {"record", (PyCFunction)(void (*)(void))speedups_record, METH_FASTCALL,
     "record(watch, scope, snapshot) -> True when the common case recorded (or ignored) the request"},
    {"encode", (PyCFunction)(void (*)(void))speedups_encode, METH_FASTCALL,
     "encode(rows, prefixes, make_prefix, make_stamp) -> the rows' JSON objects, comma-joined, or None"},
    {"crc32", speedups_crc32, METH_VARARGS,
     "crc32(data, value=0, simd=True): zlib.crc32's result (simd=False: without the carry-less multiply)"},
    {"setup", speedups_setup, METH_VARARGS,
     "setup(known_methods, consumer_headers, anonymous, send_last, deque_append, namespace, time_time,"
     " raise_later)"},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "malti_sdk._speedups",
    .m_doc = "Compiled request path of MaltiMiddleware (optional).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    struct {
        PyObject **target;
        const char *text;
    } names[] = {
        {&s_type, "type"},
        {&s_status, "status"},
        {&s_more_body, "more_body"},
        {&s_response_start, "http.response.start"},
        {&s_route, "route"},
        {&s_method, "method"},
        {&s_state, "state"},
        {&s_headers, "headers"},
        {&s_root_path, "root_path"},
        {&s_app_root_path, "app_root_path"},
        {&s_path_params, "path_params"},
        {&s_malti_consumer, "malti_consumer"},
        {&s_context, "context"},
        {&s_malti_context, "malti_context"},
        {&s_get, "get"},
        {&s_time, "time"},
        {&s_message, "message"},
        {&s_http, "http"},
        {&s_completed, "_completed"},
        {&s_serve, "_serve"},
        {&s_failed, "_failed"},
        {&s_throw, "throw"},
        {&s_close, "close"},
        {&s_wrapped, "__wrapped__"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].target == NULL) {
            *names[i].target = PyUnicode_InternFromString(names[i].text);
            if (*names[i].target == NULL)
                return NULL;
        }
    }
    if (PyType_Ready(&WatchType) < 0 || PyType_Ready(&GzipWriterType) < 0 || PyType_Ready(&RowStoreType) < 0 ||
        PyType_Ready(&CallType) < 0 || PyType_Ready(&MiddlewareType) < 0 || PyType_Ready(&CallMethodType) < 0)
        return NULL;
    gzip_tables_init();
    crc_simd_init();
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL)
        return NULL;
    /* the interface version malti_sdk/_records.py checks (SPEEDUPS_VERSION): raise it with
     * any change to the functions' arguments or results */
    if (PyModule_AddIntConstant(module, "VERSION", 7) < 0 ||
        PyModule_AddObjectRef(module, "Call", (PyObject *)&CallType) < 0 ||
        PyModule_AddObjectRef(module, "Middleware", (PyObject *)&MiddlewareType) < 0 ||
        PyModule_AddObjectRef(module, "CallMethod", (PyObject *)&CallMethodType) < 0 ||
        PyModule_AddObjectRef(module, "Watch", (PyObject *)&WatchType) < 0 ||
        PyModule_AddObjectRef(module, "GzipWriter", (PyObject *)&GzipWriterType) < 0 ||
        PyModule_AddObjectRef(module, "RowStore", (PyObject *)&RowStoreType) < 0 ||
        PyModule_AddIntConstant(module, "CRC_SIMD", crc_simd) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
