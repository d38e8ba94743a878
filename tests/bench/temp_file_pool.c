/* Lab only, for temp_file_pool.sh (issue 9, goal 4): a VFS that serves SQLite's sorter temp
 * files (SQLITE_OPEN_TEMP_JOURNAL) from a pool of unlinked files kept open and overwritten,
 * instead of a new file for each sort. Every other file goes to the default VFS. Loaded into the
 * sqlite3 CLI (`.load`, then `.open`), to measure what reusing the temp files' page-cache pages
 * saves. Not part of oppsync. */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct PoolFile { sqlite3_file base; int fd; sqlite3_int64 size; } PoolFile;
static sqlite3_vfs *orig;
static sqlite3_vfs pool_vfs;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int free_fds[256];
static int n_free = 0;

static int take_fd(void) {
  pthread_mutex_lock(&lock);
  if (n_free > 0) { int fd = free_fds[--n_free]; pthread_mutex_unlock(&lock); return fd; }
  pthread_mutex_unlock(&lock);
  const char *dir = getenv("SQLITE_TMPDIR"); if (!dir) dir = "/var/tmp";
  char path[512]; snprintf(path, sizeof path, "%s/pool_XXXXXX", dir);
  int fd = mkstemp(path); if (fd >= 0) unlink(path);
  return fd;
}
static void give_fd(int fd) {
  pthread_mutex_lock(&lock);
  if (n_free < 256) free_fds[n_free++] = fd; else close(fd);
  pthread_mutex_unlock(&lock);
}
static int pClose(sqlite3_file *f) { PoolFile *p = (PoolFile *)f; give_fd(p->fd); p->fd = -1; return SQLITE_OK; }
static int pRead(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off) {
  PoolFile *p = (PoolFile *)f; int got = 0;
  if (off < p->size) {
    sqlite3_int64 want = p->size - off < amt ? p->size - off : amt;
    while (got < want) { ssize_t n = pread(p->fd, (char *)buf + got, want - got, off + got); if (n <= 0) { if (n < 0 && errno == EINTR) continue; break; } got += n; }
  }
  if (got < amt) { memset((char *)buf + got, 0, amt - got); return SQLITE_IOERR_SHORT_READ; }
  return SQLITE_OK;
}
static int pWrite(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off) {
  PoolFile *p = (PoolFile *)f; int done = 0;
  while (done < amt) { ssize_t n = pwrite(p->fd, (const char *)buf + done, amt - done, off + done); if (n < 0) { if (errno == EINTR) continue; return SQLITE_IOERR_WRITE; } done += n; }
  if (off + amt > p->size) p->size = off + amt;
  return SQLITE_OK;
}
static int pTruncate(sqlite3_file *f, sqlite3_int64 size) { PoolFile *p = (PoolFile *)f; if (size < p->size) p->size = size; return SQLITE_OK; }
static int pSync(sqlite3_file *f, int flags) { return SQLITE_OK; }
static int pFileSize(sqlite3_file *f, sqlite3_int64 *size) { *size = ((PoolFile *)f)->size; return SQLITE_OK; }
static int pLock(sqlite3_file *f, int l) { return SQLITE_OK; }
static int pCheck(sqlite3_file *f, int *out) { *out = 0; return SQLITE_OK; }
static int pControl(sqlite3_file *f, int op, void *arg) { return SQLITE_NOTFOUND; }
static int pSector(sqlite3_file *f) { return 4096; }
static int pDevice(sqlite3_file *f) { return 0; }
static const sqlite3_io_methods pool_io = { 1, pClose, pRead, pWrite, pTruncate, pSync, pFileSize,
  pLock, pLock, pCheck, pControl, pSector, pDevice };

static int xOpen(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out) {
  if (name == 0 && (flags & SQLITE_OPEN_TEMP_JOURNAL)) {
    PoolFile *p = (PoolFile *)f; memset(p, 0, sizeof *p);
    p->fd = take_fd(); if (p->fd < 0) return SQLITE_CANTOPEN;
    p->size = 0; p->base.pMethods = &pool_io; if (out) *out = flags; return SQLITE_OK;
  }
  return orig->xOpen(orig, name, f, flags, out);
}
static int xDelete(sqlite3_vfs *v, const char *n, int s) { return orig->xDelete(orig, n, s); }
static int xAccess(sqlite3_vfs *v, const char *n, int fl, int *r) { return orig->xAccess(orig, n, fl, r); }
static int xFull(sqlite3_vfs *v, const char *n, int nOut, char *out) { return orig->xFullPathname(orig, n, nOut, out); }
static void *xDlOpen(sqlite3_vfs *v, const char *n) { return orig->xDlOpen(orig, n); }
static void xDlError(sqlite3_vfs *v, int n, char *e) { orig->xDlError(orig, n, e); }
static void (*xDlSym(sqlite3_vfs *v, void *h, const char *s))(void) { return orig->xDlSym(orig, h, s); }
static void xDlClose(sqlite3_vfs *v, void *h) { orig->xDlClose(orig, h); }
static int xRandom(sqlite3_vfs *v, int n, char *o) { return orig->xRandomness(orig, n, o); }
static int xSleep(sqlite3_vfs *v, int us) { return orig->xSleep(orig, us); }
static int xTime(sqlite3_vfs *v, double *t) { return orig->xCurrentTime(orig, t); }
static int xErr(sqlite3_vfs *v, int n, char *e) { return orig->xGetLastError ? orig->xGetLastError(orig, n, e) : 0; }
static int xTime64(sqlite3_vfs *v, sqlite3_int64 *t) { return orig->xCurrentTimeInt64(orig, t); }

int sqlite3_pool_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  SQLITE_EXTENSION_INIT2(api);
  if (!orig) {
    orig = sqlite3_vfs_find(0);
    pool_vfs.iVersion = 2; pool_vfs.szOsFile = orig->szOsFile > (int)sizeof(PoolFile) ? orig->szOsFile : (int)sizeof(PoolFile);
    pool_vfs.mxPathname = orig->mxPathname; pool_vfs.zName = "pool";
    pool_vfs.xOpen = xOpen; pool_vfs.xDelete = xDelete; pool_vfs.xAccess = xAccess; pool_vfs.xFullPathname = xFull;
    pool_vfs.xDlOpen = xDlOpen; pool_vfs.xDlError = xDlError; pool_vfs.xDlSym = xDlSym; pool_vfs.xDlClose = xDlClose;
    pool_vfs.xRandomness = xRandom; pool_vfs.xSleep = xSleep; pool_vfs.xCurrentTime = xTime; pool_vfs.xGetLastError = xErr;
    pool_vfs.xCurrentTimeInt64 = xTime64;
    sqlite3_vfs_register(&pool_vfs, 1);
  }
  return SQLITE_OK_LOAD_PERMANENTLY;
}
