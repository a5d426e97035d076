/* A lane's launcher, built for speed: the same program as sandbox_launcher.py, which documents
 * what it does and why, speaking the same protocol. The member runs this build where it exists
 * (native_launcher.py builds it; the file's name carries a hash of this text, so a build of an
 * older text is never run) and the Python one elsewhere; the tests run both.
 *
 * Each step of a shard's start and end is paid on the shard's own core, once per shard. In
 * Python they cost 0.27 ms of CPU per shard of `true`, almost half what `true` itself costs.
 *
 * Requests come as NUL-terminated fields (sandbox_launcher.encode_start): "start", the id, the
 * working folder, the cores to pin to (comma-separated, or empty), the count of arguments, the
 * arguments, then the environment's NAME=VALUE entries. Answers are JSON objects.
 *
 * It lives among the task's code: a shard may stop or kill it, and the member believes nothing
 * it says beyond that lane. It cannot be ptraced (not dumpable).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE (1 << 20)
#define STARTED_DELAY_NS 20000000LL   /* sandbox_launcher.STARTED_DELAY */
#define CLEAN_UP_LIMIT_NS 2000000000LL /* sandbox_launcher.CLEAN_UP_LIMIT */
#define MAX_DEPTH 1000                 /* a tree deeper is not removed (Python's recursion limit) */
#define TMPFS_MAGIC_ 0x01021994
#define MQUEUE_MAGIC_ 0x19800202
#define LANDLOCK_SCOPES 3 /* abstract Unix sockets, signals */
#define SYS_landlock_create_ruleset_ 444
#define SYS_landlock_restrict_self_ 446
#define CLOSE_RANGE_CLOEXEC_ (1U << 2)
#define IOPRIO_WHO_PROCESS_ 1
#define SCHED_FLAG_UTIL_CLAMP_ 0x60ULL
#define PROBLEMS 8192 /* room for what a clean-up could not do */

static const char *const PRIVATE_TEMP[] = {"/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"};
#define TEMPORARY_COUNT (sizeof PRIVATE_TEMP / sizeof PRIVATE_TEMP[0])

static char request[MAX_MESSAGE];

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *grown(void *items, size_t count, size_t size) {
    void *bigger = realloc(items, (count + 1) * size);
    if (bigger == NULL) {
        perror("poolnet launcher: out of memory");
        exit(1);
    }
    return bigger;
}

/* ---- answers ----------------------------------------------------------------------------- */

static int member = -1; /* the socket to the member */

/* Append `text` to `out` as the inside of a JSON string. */
static void json_text(char *out, size_t room, const char *text) {
    size_t used = strlen(out);
    for (const unsigned char *c = (const unsigned char *)text; *c && used + 7 < room; c++) {
        if (*c == '"' || *c == '\\') {
            out[used++] = '\\';
            out[used++] = (char)*c;
        } else if (*c < 0x20) {
            used += (size_t)snprintf(out + used, room - used, "\\u%04x", *c);
        } else {
            out[used++] = (char)*c;
        }
    }
    out[used] = '\0';
}

/* Send one answer, with a descriptor if `fd` >= 0; a member gone is seen at the next read. */
static void send_answer(const char *text, int fd) {
    struct iovec part = {.iov_base = (void *)text, .iov_len = strlen(text)};
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1};
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    if (fd >= 0) {
        memset(&control, 0, sizeof control);
        message.msg_control = control.space;
        message.msg_controllen = sizeof control.space;
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &fd, sizeof(int));
    }
    while (sendmsg(member, &message, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

static void send_failed(const char *id, int code, const char *error) {
    char text[1024];
    snprintf(text, sizeof text, "{\"op\":\"failed\",\"id\":%s,\"errno\":%d,\"error\":\"", id, code);
    json_text(text, sizeof text - 2, error);
    strcat(text, "\"}");
    send_answer(text, -1);
}

/* ---- what a shard may change on the launcher, set back after it -------------------------- */

static struct rlimit limits[RLIM_NLIMITS];

static void read_limits(void) {
    for (int kind = 0; kind < RLIM_NLIMITS; kind++)
        getrlimit(kind, &limits[kind]);
}

static void note(char *problems, const char *format, ...) {
    char line[PATH_MAX + 256];
    va_list values;
    va_start(values, format);
    vsnprintf(line, sizeof line, format, values);
    va_end(values);
    size_t used = strlen(problems);
    snprintf(problems + used, PROBLEMS - used, "%s%s", used ? "; " : "", line);
}

static void restore_limits(char *problems) {
    for (int kind = 0; kind < RLIM_NLIMITS; kind++) {
        struct rlimit now;
        if (getrlimit(kind, &now) != 0)
            continue;
        if (now.rlim_cur == limits[kind].rlim_cur && now.rlim_max == limits[kind].rlim_max)
            continue;
        if (setrlimit(kind, &limits[kind]) != 0)
            note(problems, "a shard lowered resource limit %d for good", kind);
    }
}

/* ---- the rest of a shard's processes ----------------------------------------------------- */

/* Whether a child is left, reaping those that ended. None left means nothing else runs here:
 * orphans come to this subreaper, so every process but init descends from it. */
static bool has_children(void) {
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid < 0)
            return errno == EINTR;
        if (pid == 0)
            return true;
    }
}

/* SIGKILL and reap every other process in the sandbox (sandbox_launcher._kill_the_rest); false
 * if some would not go in time. */
static bool kill_the_rest(void) {
    long long deadline = now_ns() + CLEAN_UP_LIMIT_NS;
    while (has_children()) {
        if (now_ns() > deadline)
            return false;
        kill(-1, SIGKILL);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    return true;
}

/* ---- how it is scheduled, which a shard may change too (same uid) ------------------------ */

/* The kernel's sched_attr (version 1): policy, nice value, a fair task's time slice, clamps. */
typedef struct {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
} SchedulingAttributes;

typedef struct {
    SchedulingAttributes attributes;
    int io_priority;
    cpu_set_t cores;
} Scheduling;

static Scheduling scheduling; /* as the lane began */

static int read_scheduling(Scheduling *now) {
    memset(now, 0, sizeof *now);
    if (syscall(SYS_sched_getattr, 0, &now->attributes, sizeof now->attributes, 0) != 0)
        return -1;
    now->io_priority = (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS_, 0);
    if (now->io_priority < 0)
        return -1;
    return sched_getaffinity(0, sizeof now->cores, &now->cores);
}

static bool same_attributes(const SchedulingAttributes *a, const SchedulingAttributes *b) {
    return a->policy == b->policy && a->flags == b->flags && a->nice == b->nice && a->priority == b->priority &&
           a->runtime == b->runtime && a->deadline == b->deadline && a->period == b->period &&
           a->util_min == b->util_min && a->util_max == b->util_max;
}

/* Set the attributes back as the lane began: the clamps only with their flags, and a fair
 * task's slice as the default one (0), which is what the launcher started with. */
static void set_attributes_back(void) {
    SchedulingAttributes wanted = scheduling.attributes;
    wanted.size = sizeof wanted;
    wanted.flags |= SCHED_FLAG_UTIL_CLAMP_;
    if (wanted.policy == SCHED_OTHER || wanted.policy == SCHED_BATCH || wanted.policy == SCHED_IDLE)
        wanted.runtime = 0;
    if (syscall(SYS_sched_setattr, 0, &wanted, 0) != 0) {
        wanted.flags &= ~(uint64_t)SCHED_FLAG_UTIL_CLAMP_; /* a kernel without clamps */
        syscall(SYS_sched_setattr, 0, &wanted, 0);
    }
}

/* Its scheduling attributes, I/O priority and cores as the lane began; what cannot be set back
 * (a nice value raised past what this uid may lower again) is named. */
static void restore_scheduling(char *problems) {
    Scheduling now;
    if (read_scheduling(&now) != 0) {
        note(problems, "its scheduling could not be read: %s", strerror(errno));
        return;
    }
    if (!same_attributes(&now.attributes, &scheduling.attributes)) {
        set_attributes_back();
        if (read_scheduling(&now) != 0 || !same_attributes(&now.attributes, &scheduling.attributes))
            note(problems, "a shard changed how the launcher is scheduled for good");
    }
    if (now.io_priority != scheduling.io_priority &&
        syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS_, 0, scheduling.io_priority) != 0)
        note(problems, "a shard changed the launcher's I/O priority for good");
    if (!CPU_EQUAL(&now.cores, &scheduling.cores) && sched_setaffinity(0, sizeof scheduling.cores, &scheduling.cores) != 0)
        note(problems, "a shard changed the launcher's cores for good");
}

/* ---- what a root shard may change in /proc/2 (root owns a launcher that is not dumpable) - */

static const char *const PROC_SETTINGS[] = {"/proc/self/oom_score_adj", "/proc/self/coredump_filter"};
#define PROC_SETTINGS_COUNT (sizeof PROC_SETTINGS / sizeof PROC_SETTINGS[0])
static char proc_settings[PROC_SETTINGS_COUNT][64]; /* as the lane began; empty: not watched */

static bool read_setting(const char *path, char *value, size_t room) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t size = read(fd, value, room - 1);
    close(fd);
    value[size > 0 ? size : 0] = '\0';
    return size > 0;
}

static void read_proc_settings(void) {
    if (geteuid() != 0)
        return; /* another uid's shards cannot write them: they are root's */
    for (size_t i = 0; i < PROC_SETTINGS_COUNT; i++)
        if (!read_setting(PROC_SETTINGS[i], proc_settings[i], sizeof proc_settings[i]))
            proc_settings[i][0] = '\0';
}

static void restore_proc_settings(char *problems) {
    for (size_t i = 0; i < PROC_SETTINGS_COUNT; i++) {
        char now[64];
        if (!proc_settings[i][0] || (read_setting(PROC_SETTINGS[i], now, sizeof now) && strcmp(now, proc_settings[i]) == 0))
            continue;
        int fd = open(PROC_SETTINGS[i], O_WRONLY | O_CLOEXEC);
        char value[sizeof proc_settings[i] + 2]; /* coredump_filter reads as hex digits, and is read back as octal without 0x */
        snprintf(value, sizeof value, "%s%.*s", strstr(PROC_SETTINGS[i], "coredump") ? "0x" : "",
                 (int)sizeof proc_settings[i] - 1, proc_settings[i]);
        size_t length = strlen(value);
        if (fd < 0 || write(fd, value, length) != (ssize_t)length)
            note(problems, "a shard changed the launcher's %s for good", PROC_SETTINGS[i] + strlen("/proc/self/"));
        if (fd >= 0)
            close(fd);
    }
}

/* ---- the private temporary folders ------------------------------------------------------- */

typedef struct {
    char *path;
    struct stat start;
    char *notes; /* llistxattr's list of names, as the lane began */
    ssize_t notes_size;
} Folder;

/* A folder's lstat and the length of its notes' names: setting a note changes only its ctime,
 * which on tmpfs before Linux 6.13 may stay the same within one clock tick. */
typedef struct {
    struct stat info;
    ssize_t notes;
} Signature;

typedef struct {
    const char *path;
    Folder *folders; /* the folder itself, then those on the way to bound folders */
    size_t count;
    bool way_known, skippable;
    Signature *cleaned; /* each folder's as the last clean-up left it */
} TemporaryFolder;

typedef struct {
    char **paths;
    size_t count;
    bool known; /* false: the folder holds something else than the way to bound folders */
} Way;

static char *joined(const char *folder, const char *name) {
    char *path;
    if (asprintf(&path, "%s/%s", folder, name) < 0) {
        perror("poolnet launcher: out of memory");
        exit(1);
    }
    return path;
}

static char *copied(const char *text) {
    char *copy = strdup(text);
    if (copy == NULL) {
        perror("poolnet launcher: out of memory");
        exit(1);
    }
    return copy;
}

static void free_way(Way *way) {
    for (size_t i = 0; i < way->count; i++)
        free(way->paths[i]);
    free(way->paths);
    *way = (Way){0};
}

static ssize_t notes_of(const char *path, char **notes) {
    ssize_t size = llistxattr(path, NULL, 0);
    *notes = NULL;
    if (size <= 0)
        return size < 0 ? -1 : 0;
    *notes = malloc((size_t)size);
    if (*notes == NULL)
        return -1;
    size = llistxattr(path, *notes, (size_t)size);
    if (size < 0) {
        free(*notes);
        *notes = NULL;
    }
    return size;
}

static bool has_note(const char *notes, ssize_t size, const char *name) {
    for (ssize_t at = 0; at < size; at += (ssize_t)strlen(notes + at) + 1)
        if (strcmp(notes + at, name) == 0)
            return true;
    return false;
}

/* The entries of `folder` (made searchable first if a shard locked it), NULL on failure. */
static DIR *open_folder(const char *folder) {
    DIR *dir = opendir(folder);
    if (dir == NULL && (errno == EACCES || errno == EPERM) && chmod(folder, 0700) == 0)
        dir = opendir(folder);
    return dir;
}

static bool is_entry(const struct dirent *entry) {
    return strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0;
}

/* The folders under `folder`, on its own file system, that lead to a folder bound in from
 * another (sandbox_launcher._ways_to_bound_folders). */
static void way_to_bound_folders(const char *folder, dev_t device, bool nested, Way *way) {
    DIR *dir = open_folder(folder);
    if (dir == NULL) {
        way->known = false;
        return;
    }
    bool empty = true;
    for (struct dirent *entry; way->known && (entry = readdir(dir)) != NULL;) {
        if (!is_entry(entry))
            continue;
        empty = false;
        char *path = joined(folder, entry->d_name);
        struct stat info;
        if (lstat(path, &info) != 0 || !S_ISDIR(info.st_mode)) {
            way->known = false;
            free(path);
        } else if (info.st_dev != device) {
            free(path); /* bound in: not this folder's to clean */
        } else {
            way->paths = grown(way->paths, way->count, sizeof(char *));
            way->paths[way->count++] = path;
            way_to_bound_folders(path, device, true, way);
        }
    }
    closedir(dir);
    if (nested && empty)
        way->known = false;
}

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static bool same_signature(const struct stat *a, const struct stat *b) {
    return same_file(a, b) && a->st_mode == b->st_mode && a->st_uid == b->st_uid && a->st_gid == b->st_gid &&
           a->st_size == b->st_size && a->st_atim.tv_sec == b->st_atim.tv_sec &&
           a->st_atim.tv_nsec == b->st_atim.tv_nsec && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void init_folder(Folder *folder, const char *path) {
    folder->path = copied(path);
    if (lstat(path, &folder->start) != 0 || (folder->notes_size = notes_of(path, &folder->notes)) < 0) {
        fprintf(stderr, "poolnet launcher: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* Its mode, notes and times as the lane began. */
static int set_back(const Folder *folder) {
    struct stat now;
    if (lstat(folder->path, &now) != 0)
        return -1;
    if ((now.st_mode & 07777) != (folder->start.st_mode & 07777) && chmod(folder->path, folder->start.st_mode & 07777) != 0)
        return -1;
    char *notes;
    ssize_t size = notes_of(folder->path, &notes);
    if (size < 0)
        return -1;
    for (ssize_t at = 0; at < size; at += (ssize_t)strlen(notes + at) + 1) {
        if (!has_note(folder->notes, folder->notes_size, notes + at) && lremovexattr(folder->path, notes + at) != 0) {
            free(notes);
            return -1;
        }
    }
    free(notes);
    struct timespec times[2] = {folder->start.st_atim, folder->start.st_mtim};
    return utimensat(AT_FDCWD, folder->path, times, AT_SYMLINK_NOFOLLOW);
}

static int signature_of(const char *path, Signature *signature) {
    if (lstat(path, &signature->info) != 0)
        return -1;
    signature->notes = llistxattr(path, NULL, 0);
    return signature->notes < 0 ? -1 : 0;
}

static bool signatures_as_cleaned(const TemporaryFolder *temporary) {
    for (size_t i = 0; i < temporary->count; i++) {
        Signature now;
        if (signature_of(temporary->folders[i].path, &now) != 0 || now.notes != temporary->cleaned[i].notes ||
            !same_signature(&now.info, &temporary->cleaned[i].info))
            return false;
    }
    return true;
}

static int read_signatures(TemporaryFolder *temporary) {
    for (size_t i = 0; i < temporary->count; i++)
        if (signature_of(temporary->folders[i].path, &temporary->cleaned[i]) != 0)
            return -1;
    return 0;
}

static void init_temporary(TemporaryFolder *temporary, const char *path) {
    *temporary = (TemporaryFolder){.path = path};
    temporary->folders = grown(NULL, 0, sizeof(Folder));
    init_folder(&temporary->folders[0], path);
    temporary->count = 1;
    Way way = {.known = true};
    way_to_bound_folders(path, temporary->folders[0].start.st_dev, false, &way);
    temporary->way_known = way.known;
    struct statfs system;
    temporary->skippable = way.known && statfs(path, &system) == 0 &&
                           (system.f_type == TMPFS_MAGIC_ || system.f_type == MQUEUE_MAGIC_);
    for (size_t i = 0; way.known && i < way.count; i++) {
        temporary->folders = grown(temporary->folders, temporary->count, sizeof(Folder));
        init_folder(&temporary->folders[temporary->count++], way.paths[i]);
    }
    free_way(&way);
    temporary->cleaned = calloc(temporary->count, sizeof(Signature));
    if (temporary->cleaned == NULL || read_signatures(temporary) != 0) {
        fprintf(stderr, "poolnet launcher: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* Remove the emptied folder `path` from `folder` (made writable first if a shard locked it);
 * one that leads to a mount stays, as it must. */
static bool remove_folder(const char *folder, const char *path) {
    if (rmdir(path) == 0)
        return true;
    if ((errno == EACCES || errno == EPERM) && chmod(folder, 0700) == 0 && rmdir(path) == 0)
        return true;
    return errno == ENOTEMPTY || errno == EEXIST || errno == EBUSY;
}

/* Remove what `folder` holds on its own file system (sandbox_launcher._empty); false if
 * something is left that should not be; `*too_deep` once a tree is nested past MAX_DEPTH. */
static bool empty_folder(const char *folder, int depth, bool *too_deep) {
    if (depth > MAX_DEPTH) {
        *too_deep = true;
        return false;
    }
    struct stat info;
    if (lstat(folder, &info) != 0)
        return errno == ENOENT;
    DIR *dir = open_folder(folder);
    if (dir == NULL)
        return false;
    bool emptied = true;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        if (!is_entry(entry))
            continue;
        char *path = joined(folder, entry->d_name);
        struct stat inner;
        int found = lstat(path, &inner);
        if (found != 0 && errno == EACCES && chmod(folder, 0700) == 0) /* a folder a shard made unsearchable */
            found = lstat(path, &inner);
        if (found != 0) {
            emptied = errno == ENOENT && emptied;
        } else if (S_ISDIR(inner.st_mode)) {
            if (inner.st_dev == info.st_dev) {
                emptied = empty_folder(path, depth + 1, too_deep) && emptied;
                emptied = remove_folder(folder, path) && emptied;
            }
        } else if (unlink(path) != 0) {
            if ((errno != EACCES && errno != EPERM) || chmod(folder, 0700) != 0 || unlink(path) != 0)
                emptied = false;
        }
        free(path);
    }
    closedir(dir);
    return emptied;
}

static bool way_as_it_began(const TemporaryFolder *temporary) {
    Way way = {.known = true};
    way_to_bound_folders(temporary->path, temporary->folders[0].start.st_dev, false, &way);
    bool same = way.known && way.count == temporary->count - 1;
    for (size_t i = 1; same && i < temporary->count; i++) {
        bool found = false;
        for (size_t j = 0; j < way.count && !found; j++)
            found = strcmp(way.paths[j], temporary->folders[i].path) == 0;
        struct stat now;
        same = found && lstat(temporary->folders[i].path, &now) == 0 && same_file(&now, &temporary->folders[i].start);
    }
    free_way(&way);
    return same;
}

/* Make it as it began, after a shard; what could not be done goes to `problems`. */
static void clean_temporary(TemporaryFolder *temporary, char *problems) {
    if (temporary->skippable && signatures_as_cleaned(temporary))
        return;
    struct stat info;
    if (lstat(temporary->path, &info) != 0) {
        note(problems, "%s could not be made as new: %s", temporary->path, strerror(errno));
        return;
    }
    if (!same_file(&info, &temporary->folders[0].start) || !S_ISDIR(info.st_mode)) {
        note(problems, "%s was replaced", temporary->path);
        return;
    }
    bool too_deep = false;
    if (!empty_folder(temporary->path, 0, &too_deep)) {
        note(problems, too_deep ? "%s holds a tree too deep to remove" : "%s could not be emptied", temporary->path);
        return;
    }
    if (temporary->way_known && !way_as_it_began(temporary)) {
        note(problems, "the folders in %s that lead to the lane's own were moved", temporary->path);
        return;
    }
    for (size_t i = 0; i < temporary->count; i++) {
        if (set_back(&temporary->folders[i]) != 0) {
            note(problems, "%s could not be made as new: %s", temporary->path, strerror(errno));
            return;
        }
    }
    if (read_signatures(temporary) != 0)
        note(problems, "%s could not be made as new: %s", temporary->path, strerror(errno));
}

/* ---- System V IPC ------------------------------------------------------------------------ */

/* Remove each object `table` lists; false if the listing cannot be read. */
static bool remove_ipc_listed(const char *table, int kind) {
    char path[64];
    snprintf(path, sizeof path, "/proc/sysvipc/%s", table);
    FILE *listing = fopen(path, "re");
    if (listing == NULL)
        return false;
    char line[1024];
    bool header = true;
    while (fgets(line, sizeof line, listing) != NULL) {
        if (header) {
            header = false;
            continue;
        }
        long key, id;
        if (sscanf(line, "%ld %ld", &key, &id) != 2)
            continue;
        if (kind == 0)
            shmctl((int)id, IPC_RMID, NULL);
        else if (kind == 1)
            msgctl((int)id, IPC_RMID, NULL);
        else
            semctl((int)id, 0, IPC_RMID);
    }
    fclose(listing);
    return true;
}

/* How many objects of a kind this IPC namespace holds; -1 where the kernel will not say. */
static int ipc_count(int kind) {
    union {
        struct shm_info shared;
        struct msginfo queues;
        struct seminfo semaphores;
    } answer;
    union semun {
        int value;
        struct semid_ds *set;
        unsigned short *values;
        struct seminfo *info;
    } argument = {.info = &answer.semaphores};
    if (kind == 0)
        return shmctl(0, SHM_INFO, (struct shmid_ds *)&answer.shared) < 0 ? -1 : answer.shared.used_ids;
    if (kind == 1)
        return msgctl(0, MSG_INFO, (struct msqid_ds *)&answer.queues) < 0 ? -1 : answer.queues.msgpool;
    return semctl(0, 0, SEM_INFO, argument) < 0 ? -1 : answer.semaphores.semusz;
}

/* Remove the shared memory, queues and semaphores left, counting each kind first; what is
 * left goes to `problems`. */
static void remove_ipc(char *problems) {
    static const char *const tables[] = {"shm", "msg", "sem"};
    for (int kind = 0; kind < 3; kind++) {
        if (ipc_count(kind) == 0)
            continue;
        if (!remove_ipc_listed(tables[kind], kind))
            note(problems, "its System V IPC objects (%s) could not be listed", tables[kind]);
        else if (ipc_count(kind) > 0)
            note(problems, "its System V IPC objects (%s) could not be removed", tables[kind]);
    }
}

/* ---- a shard ----------------------------------------------------------------------------- */

typedef struct {
    long long id;
    pid_t pid; /* 0: none runs */
    long long tell_at;
    bool told;
} Shard;

static Shard shard;
static int outputs[2], output_sizes[2];
static mode_t output_modes[2]; /* a shard may fchmod them (its uid owns them): set back */
static sigset_t ignored; /* the signals this launcher was started with ignored */
static TemporaryFolder temporary[TEMPORARY_COUNT];
static size_t temporary_count;

static void restore_outputs(char *problems) {
    for (int i = 0; i < 2; i++) {
        struct stat now;
        if (fstat(outputs[i], &now) != 0 || ((now.st_mode & 07777) != output_modes[i] && fchmod(outputs[i], output_modes[i]) != 0))
            note(problems, "a shard changed the lane's pipes for good");
    }
}

/* A new opening of the lane's pipe `fd` for one shard, at the lane's size. */
static int fresh_output(int fd, int size) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int fresh = open(path, O_WRONLY | O_CLOEXEC);
    if (fresh >= 0 && fcntl(fresh, F_GETPIPE_SZ) != size && fcntl(fresh, F_SETPIPE_SZ, size) < 0) {
        int error = errno;
        close(fresh);
        errno = error;
        return -1;
    }
    return fresh;
}

static bool parse_cores(const char *text, cpu_set_t *cores) {
    CPU_ZERO(cores);
    while (*text) {
        char *end;
        long core = strtol(text, &end, 10);
        if (end == text || core < 0 || core >= CPU_SETSIZE || (*end && *end != ','))
            return false;
        CPU_SET((int)core, cores);
        text = *end ? end + 1 : end;
    }
    return true;
}

/* Start `argv` in `cwd`, in a session of its own, with vfork and exec (sandbox_launcher._spawn);
 * an errno on failure. */
static int spawn(char *const argv[], const char *cwd, char *const envp[], pid_t *pid, bool *unopened) {
    const char *search_path = "/bin:/usr/bin"; /* Python's os.defpath */
    for (char *const *entry = envp; *entry; entry++)
        if (strncmp(*entry, "PATH=", 5) == 0)
            search_path = *entry + 5; /* the last one, as Python's dict of it keeps */
    const char *own = getenv("PATH");
    if ((own == NULL || strcmp(own, search_path) != 0) && setenv("PATH", search_path, 1) != 0)
        return errno;
    /* Each shard's own openings: flags, an owner or a lock one sets on them die with it. */
    int stdio[3] = {open("/dev/null", O_RDONLY | O_CLOEXEC), fresh_output(outputs[0], output_sizes[0]),
                    fresh_output(outputs[1], output_sizes[1])};
    if (stdio[0] < 0 || stdio[1] < 0 || stdio[2] < 0) {
        int error = errno;
        *unopened = true; /* something the clean-up missed: no later shard would start either */
        for (int i = 0; i < 3; i++)
            if (stdio[i] >= 0)
                close(stdio[i]);
        return error;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    sigset_t none;
    sigemptyset(&none);
    posix_spawn_file_actions_init(&actions);
    for (int target = 0; target < 3; target++)
        posix_spawn_file_actions_adddup2(&actions, stdio[target], target);
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setsigdefault(&attributes, &ignored);
    posix_spawnattr_setsigmask(&attributes, &none);
    int error = chdir(cwd) == 0 ? posix_spawnp(pid, argv[0], &actions, &attributes, argv, envp) : errno;
    if (chdir("/") != 0 && error != 0)
        error = errno; /* a shard that started is run all the same */
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    for (int i = 0; i < 3; i++)
        close(stdio[i]);
    return error;
}

/* Start the shard a request asks for; an answer is sent only if it cannot start. False once
 * this launcher must end (no shard's openings can be made). */
static bool start(char *message, size_t size) {
    char *fields[5], *at = message, *end = message + size;
    for (int i = 0; i < 5; i++) {
        fields[i] = at;
        at = at < end ? memchr(at, '\0', (size_t)(end - at)) : NULL;
        if (at == NULL) {
            send_failed("null", EINVAL, "a malformed start request");
            return true;
        }
        at++;
    }
    char *id_end, *argc_end;
    long long id = strtoll(fields[1], &id_end, 10);
    long argc = strtol(fields[4], &argc_end, 10);
    if (strcmp(fields[0], "start") != 0 || !isdigit((unsigned char)fields[1][0]) || *id_end ||
        !isdigit((unsigned char)fields[4][0]) || *argc_end || argc < 1) {
        send_failed("null", EINVAL, "not a start request");
        return true;
    }
    char **argv = calloc((size_t)argc + 1, sizeof(char *));
    size_t envc = 0;
    char **envp = NULL;
    bool complete = argv != NULL;
    for (long i = 0; complete && at < end; i++) {
        char *field = at;
        at = memchr(at, '\0', (size_t)(end - at)) + 1;
        if (i < argc) {
            argv[i] = field;
        } else if (strchr(field, '=') != NULL && field[0] != '=') {
            envp = grown(envp, envc, sizeof(char *));
            envp[envc++] = field;
        } else {
            complete = false;
        }
    }
    envp = grown(envp, envc, sizeof(char *));
    envp[envc] = NULL;
    complete = complete && argv[argc - 1] != NULL;
    cpu_set_t cores, previous;
    bool pin = false;
    int error = complete ? 0 : EINVAL;
    if (error == 0 && fields[3][0] != '\0') {
        if (!parse_cores(fields[3], &cores))
            error = EINVAL;
        else if (sched_getaffinity(0, sizeof previous, &previous) != 0 || sched_setaffinity(0, sizeof cores, &cores) != 0)
            error = errno;
        else
            pin = true;
    }
    pid_t pid = 0;
    bool unopened = false;
    if (error == 0)
        error = spawn(argv, fields[2], envp, &pid, &unopened);
    if (pin) /* failing, the clean-up after the shard sets it back or ends the lane */
        sched_setaffinity(0, sizeof previous, &previous);
    free(argv);
    free(envp);
    if (error != 0) {
        char id_text[32];
        snprintf(id_text, sizeof id_text, "%lld", id);
        send_failed(id_text, error, complete ? strerror(error) : "a malformed start request");
        return !unopened;
    }
    /* Its end, even one before this line, is pending: SIGCHLD is blocked, not lost. */
    shard = (Shard){.id = id, .pid = pid, .tell_at = now_ns() + STARTED_DELAY_NS};
    return true;
}

/* The shard still runs: send the member a pidfd of it. */
static void tell_started(void) {
    shard.told = true;
    int pidfd = (int)syscall(SYS_pidfd_open, shard.pid, 0);
    if (pidfd < 0)
        return;
    char text[96];
    snprintf(text, sizeof text, "{\"op\":\"started\",\"id\":%lld}", shard.id);
    send_answer(text, pidfd);
    close(pidfd);
}

/* Reap every child that ended; once the shard has, clean the lane and report it. False once
 * this launcher must end. */
static bool children(void) {
    for (;;) {
        siginfo_t ended = {0};
        if (waitid(P_ALL, 0, &ended, WEXITED | WNOHANG | WNOWAIT) != 0)
            return errno == EINTR || errno == ECHILD;
        if (ended.si_pid == 0)
            return true;
        if (ended.si_pid == shard.pid)
            break;
        waitpid(ended.si_pid, NULL, 0); /* an orphan that came here and died */
    }
    int status = 0;
    while (waitpid(shard.pid, &status, 0) < 0 && errno == EINTR) {
    }
    long long id = shard.id;
    shard.pid = 0;
    /* First: nothing of the shard may change what is set back next. The kill needs no
     * descriptor, whatever limits a leftover process set on this launcher. */
    if (!kill_the_rest())
        return false; /* exit, unreported: the member ends this sandbox */
    char problems[PROBLEMS] = "";
    restore_limits(problems); /* before the clean-up, which opens folders (a descriptor limit) */
    restore_scheduling(problems);
    restore_proc_settings(problems);
    restore_outputs(problems);
    for (size_t i = 0; i < temporary_count; i++)
        clean_temporary(&temporary[i], problems);
    remove_ipc(problems);
    int code = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
    char text[PROBLEMS + 128];
    snprintf(text, sizeof text, "{\"op\":\"exited\",\"id\":%lld,\"code\":%d", id, code);
    if (problems[0]) {
        strcat(text, ",\"last\":\"");
        json_text(text, sizeof text - 3, problems);
        strcat(text, "\"");
    }
    strcat(text, "}");
    send_answer(text, -1);
    return problems[0] == '\0';
}

/* Read and act on the member's next request; false once it closed its end. */
static bool next_request(void) {
    struct iovec part = {.iov_base = request, .iov_len = sizeof request};
    union {
        char space[CMSG_SPACE(253 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
    ssize_t size = recvmsg(member, &message, MSG_CMSG_CLOEXEC);
    if (size < 0)
        return errno == EINTR || errno == EAGAIN;
    bool carried = false;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            close(fd); /* no request carries any */
            carried = true;
        }
    }
    if (size == 0)
        return false;
    if (carried || (message.msg_flags & MSG_TRUNC) || request[size - 1] != '\0') {
        send_failed("null", EINVAL, "not a start request");
        return true;
    }
    return start(request, (size_t)size);
}

/* One request at a time (sandbox_launcher.Launcher.serve). */
static void serve(void) {
    int me = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (me < 0) {
        perror("poolnet launcher: pidfd_open");
        return;
    }
    send_answer("{\"op\":\"ready\"}", me);
    close(me);
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    for (;;) {
        if (shard.pid == 0) {
            if (!next_request())
                return;
            continue;
        }
        int heard;
        if (shard.told) {
            heard = sigwaitinfo(&child, NULL);
        } else {
            long long left = shard.tell_at - now_ns();
            struct timespec wait = {0, 0};
            if (left > 0)
                wait = (struct timespec){.tv_sec = left / 1000000000LL, .tv_nsec = left % 1000000000LL};
            heard = sigtimedwait(&child, NULL, &wait);
            if (heard < 0 && errno == EAGAIN) {
                tell_started();
                continue;
            }
        }
        if (heard < 0)
            continue; /* EINTR: stopped and continued */
        if (!children())
            return;
    }
}

/* ---- the launcher's own confinement ------------------------------------------------------ */

struct ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};

/* A Landlock domain nested in the sandbox's (sandbox_launcher._enter_a_nested_domain). */
static int enter_a_nested_domain(void) {
    struct ruleset_attr attr = {0, 0, LANDLOCK_SCOPES};
    int ruleset = (int)syscall(SYS_landlock_create_ruleset_, &attr, sizeof attr, 0);
    if (ruleset < 0)
        return -1;
    int result = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? (int)syscall(SYS_landlock_restrict_self_, ruleset, 0) : -1;
    close(ruleset);
    return result;
}

static bool is_number(const char *text) {
    if (!*text)
        return false;
    for (; *text; text++)
        if (!isdigit((unsigned char)*text))
            return false;
    return true;
}

int main(int argc, char **argv) {
    if (argc != 4 || !is_number(argv[1]) || !is_number(argv[2]) || !is_number(argv[3])) {
        fputs("usage: sandbox_launcher SOCKET_FD STDOUT_FD STDERR_FD\n", stderr);
        return 2;
    }
    if (getpid() != 2 || getppid() != 1) {
        fputs("sandbox_launcher runs only as the command of a sandbox a member made\n", stderr);
        return 2;
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 ||
        enter_a_nested_domain() != 0) {
        perror("poolnet launcher: confinement");
        return 1;
    }
    prctl(PR_SET_NAME, "poolnet-lane", 0, 0, 0);
    member = atoi(argv[1]);
    outputs[0] = atoi(argv[2]);
    outputs[1] = atoi(argv[3]);
    /* Every descriptor it was given (its socket, the lane's pipes, this program's own file)
     * stays out of the shards: a shard gets the pipes as its stdout and stderr only. */
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC_) != 0)
        for (int fd = 3; fd < 1024; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    struct stat pipes[2];
    for (int i = 0; i < 2; i++) {
        output_sizes[i] = fcntl(outputs[i], F_GETPIPE_SZ);
        output_modes[i] = fstat(outputs[i], &pipes[i]) == 0 ? pipes[i].st_mode & 07777 : 0;
    }
    if (output_sizes[0] < 0 || output_sizes[1] < 0 || !output_modes[0] || !output_modes[1]) {
        perror("poolnet launcher: its pipes");
        return 1;
    }
    if (read_scheduling(&scheduling) != 0) {
        perror("poolnet launcher: its scheduling");
        return 1;
    }
    read_limits();
    read_proc_settings();
    sigemptyset(&ignored);
    for (int signal_number = 1; signal_number < NSIG; signal_number++) {
        struct sigaction action;
        if (signal_number != SIGKILL && signal_number != SIGSTOP && sigaction(signal_number, NULL, &action) == 0 &&
            action.sa_handler == SIG_IGN)
            sigaddset(&ignored, signal_number);
    }
    for (size_t i = 0; i < TEMPORARY_COUNT; i++) {
        struct stat info;
        if (lstat(PRIVATE_TEMP[i], &info) == 0)
            init_temporary(&temporary[temporary_count++], PRIVATE_TEMP[i]);
    }
    /* Heard with sigtimedwait while a shard runs, never by a handler. */
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child, NULL);
    serve();
    return 0;
}
