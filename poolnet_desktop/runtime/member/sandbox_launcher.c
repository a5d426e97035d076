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

/* Whether a child is left, reaping those that ended (none left: nothing else runs here). */
static bool has_children(void) {
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid < 0)
            return errno == EINTR;
        if (pid == 0)
            return true;
    }
}

/* Every process in the sandbox but its init (1) and this launcher, into `pids`; how many. */
static size_t others(pid_t **pids) {
    size_t count = 0;
    DIR *proc = opendir("/proc");
    if (proc == NULL)
        return 0;
    pid_t me = getpid();
    for (struct dirent *entry; (entry = readdir(proc)) != NULL;) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (!isdigit((unsigned char)entry->d_name[0]) || *end || pid == 1 || pid == me)
            continue;
        *pids = grown(*pids, count, sizeof(pid_t));
        (*pids)[count++] = (pid_t)pid;
    }
    closedir(proc);
    return count;
}

/* SIGKILL and reap every other process in the sandbox; false if some would not go in time. */
static bool kill_the_rest(void) {
    long long deadline = now_ns() + CLEAN_UP_LIMIT_NS;
    pid_t *pids = NULL;
    size_t count;
    bool gone = true;
    while (has_children() && (count = others(&pids)) > 0) {
        if (now_ns() > deadline) {
            gone = false;
            break;
        }
        for (size_t i = 0; i < count; i++)
            kill(pids[i], SIGKILL);
        for (size_t i = 0; i < count; i++)
            waitpid(pids[i], NULL, WNOHANG);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    free(pids);
    return gone;
}

/* ---- the private temporary folders ------------------------------------------------------- */

typedef struct {
    char *path;
    struct stat start;
    char *notes; /* llistxattr's list of names, as the lane began */
    ssize_t notes_size;
} Folder;

typedef struct {
    const char *path;
    Folder *folders; /* the folder itself, then those on the way to bound folders */
    size_t count;
    bool way_known, skippable;
    struct stat *cleaned; /* each folder's lstat as the last clean-up left it */
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

static bool signatures_as_cleaned(const TemporaryFolder *temporary) {
    for (size_t i = 0; i < temporary->count; i++) {
        struct stat now;
        if (lstat(temporary->folders[i].path, &now) != 0 || !same_signature(&now, &temporary->cleaned[i]))
            return false;
    }
    return true;
}

static int read_signatures(TemporaryFolder *temporary) {
    for (size_t i = 0; i < temporary->count; i++)
        if (lstat(temporary->folders[i].path, &temporary->cleaned[i]) != 0)
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
    temporary->cleaned = calloc(temporary->count, sizeof(struct stat));
    if (temporary->cleaned == NULL || read_signatures(temporary) != 0) {
        fprintf(stderr, "poolnet launcher: %s: %s\n", path, strerror(errno));
        exit(1);
    }
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
        if (lstat(path, &inner) != 0) {
            emptied = errno == ENOENT && emptied;
        } else if (S_ISDIR(inner.st_mode)) {
            if (inner.st_dev == info.st_dev) {
                emptied = empty_folder(path, depth + 1, too_deep) && emptied;
                rmdir(path); /* one that leads to a mount stays */
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

static void remove_ipc_listed(const char *table, int kind) {
    char path[64];
    snprintf(path, sizeof path, "/proc/sysvipc/%s", table);
    FILE *listing = fopen(path, "re");
    if (listing == NULL)
        return;
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
}

/* Remove the shared memory, queues and semaphores left, counting each kind first. */
static void remove_ipc(void) {
    struct shm_info shared;
    struct msginfo queues;
    struct seminfo semaphores;
    if (shmctl(0, SHM_INFO, (struct shmid_ds *)&shared) < 0 || shared.used_ids != 0)
        remove_ipc_listed("shm", 0);
    if (msgctl(0, MSG_INFO, (struct msqid_ds *)&queues) < 0 || queues.msgpool != 0)
        remove_ipc_listed("msg", 1);
    if (semctl(0, 0, SEM_INFO, &semaphores) < 0 || semaphores.semusz != 0)
        remove_ipc_listed("sem", 2);
}

/* ---- a shard ----------------------------------------------------------------------------- */

typedef struct {
    long long id;
    pid_t pid; /* 0: none runs */
    long long tell_at;
    bool told;
} Shard;

static Shard shard;
static int null_fd, outputs[2], output_sizes[2];
static sigset_t ignored; /* the signals this launcher was started with ignored */
static TemporaryFolder temporary[TEMPORARY_COUNT];
static size_t temporary_count;

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
static int spawn(char *const argv[], const char *cwd, char *const envp[], pid_t *pid) {
    const char *search_path = "/bin:/usr/bin"; /* Python's os.defpath */
    for (char *const *entry = envp; *entry; entry++)
        if (strncmp(*entry, "PATH=", 5) == 0)
            search_path = *entry + 5; /* the last one, as Python's dict of it keeps */
    const char *own = getenv("PATH");
    if ((own == NULL || strcmp(own, search_path) != 0) && setenv("PATH", search_path, 1) != 0)
        return errno;
    int stdio[3] = {null_fd, fresh_output(outputs[0], output_sizes[0]), -1};
    if (stdio[1] < 0)
        return errno;
    stdio[2] = fresh_output(outputs[1], output_sizes[1]);
    if (stdio[2] < 0) {
        int error = errno;
        close(stdio[1]);
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
    if (chdir("/") != 0 && error == 0)
        error = errno;
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    close(stdio[1]);
    close(stdio[2]);
    return error;
}

/* Start the shard a request asks for; an answer is sent only if it cannot start. */
static void start(char *message, size_t size) {
    char *fields[5], *at = message, *end = message + size;
    for (int i = 0; i < 5; i++) {
        fields[i] = at;
        at = at < end ? memchr(at, '\0', (size_t)(end - at)) : NULL;
        if (at == NULL) {
            send_failed("null", EINVAL, "a malformed start request");
            return;
        }
        at++;
    }
    char *id_end, *argc_end;
    long long id = strtoll(fields[1], &id_end, 10);
    long argc = strtol(fields[4], &argc_end, 10);
    if (strcmp(fields[0], "start") != 0 || !isdigit((unsigned char)fields[1][0]) || *id_end ||
        !isdigit((unsigned char)fields[4][0]) || *argc_end || argc < 1) {
        send_failed("null", EINVAL, "not a start request");
        return;
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
        } else {
            envp = grown(envp, envc, sizeof(char *));
            envp[envc++] = field;
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
    if (error == 0)
        error = spawn(argv, fields[2], envp, &pid);
    if (pin)
        sched_setaffinity(0, sizeof previous, &previous);
    free(argv);
    free(envp);
    if (error != 0) {
        char id_text[32];
        snprintf(id_text, sizeof id_text, "%lld", id);
        send_failed(id_text, error, complete ? strerror(error) : "a start request with too few arguments");
        return;
    }
    /* Its end, even one before this line, is pending: SIGCHLD is blocked, not lost. */
    shard = (Shard){.id = id, .pid = pid, .tell_at = now_ns() + STARTED_DELAY_NS};
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
    char problems[PROBLEMS] = "";
    restore_limits(problems); /* first: the clean-up opens folders (a descriptor limit) */
    if (!kill_the_rest())
        return false; /* exit, unreported: the member ends this sandbox */
    for (size_t i = 0; i < temporary_count; i++)
        clean_temporary(&temporary[i], problems);
    remove_ipc();
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
    if (carried || (message.msg_flags & MSG_TRUNC) || request[size - 1] != '\0')
        send_failed("null", EINVAL, "not a start request");
    else
        start(request, (size_t)size);
    return true;
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
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < 2; i++)
        output_sizes[i] = fcntl(outputs[i], F_GETPIPE_SZ);
    if (null_fd < 0 || output_sizes[0] < 0 || output_sizes[1] < 0) {
        perror("poolnet launcher: its descriptors");
        return 1;
    }
    read_limits();
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
