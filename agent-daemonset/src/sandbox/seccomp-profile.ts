// The seccomp allowlist of every worker, written for ESB (not a copy of another
// engine's profile). Where the list came from:
//  1. `strace -f -c` of the workloads that run in workers: Node.js 24 (fs, fs.watch,
//     TCP/UDP/unix sockets, HTTP, fetch, DNS, child_process spawn/exec/fork,
//     worker_threads, timers, signals, crypto, zlib), CPython 3.11 (the same plus
//     subprocess, threads, multiprocessing fork/spawn/forkserver, asyncio, mmap,
//     sqlite, ssl), busybox sh (pipelines, subshells, traps, httpd, wget, tar…) and
//     the ESB runtime emulator serving a Node handler and a shell `bootstrap`:
//     117 distinct system calls.
//  2. Then the Linux syscall table, group by group: the legacy x86_64 entry points and
//     the aarch64 ones that libc picks instead (openat for open, ppoll for poll,
//     newfstatat for stat…) and newer calls libc uses when the kernel has them
//     (statx, openat2, close_range, faccessat2, epoll_pwait2, futex_waitv…), so the
//     same runtimes work on other libc versions and on arm64 nodes.
//  3. Everything that reaches beyond the worker is left out and so refused with
//     EPERM: namespaces, mounts, kernel modules, bpf, perf, ptrace and
//     process_vm_*, keyrings, kexec/reboot, swap, clock setting, quotas, acct,
//     syslog, userfaultfd, io_uring, NUMA page migration, file handles.
import { arch as hostArch } from "node:process";

/** One argument condition of a seccomp rule (OCI runtime spec `linux.seccomp.syscalls[].args`). */
export interface SeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: "SCMP_CMP_EQ" | "SCMP_CMP_MASKED_EQ";
}

/** One rule: the calls `names` get `action` (when every `args` condition holds). */
export interface SeccompRule {
  names: string[];
  action: "SCMP_ACT_ALLOW" | "SCMP_ACT_ERRNO";
  errnoRet?: number;
  args?: SeccompArg[];
}

/**
 * The OCI runtime spec's `linux.seccomp` object. Docker's and Podman's profile
 * files use the same field names, so one object serves every runtime.
 */
export interface SeccompProfile {
  defaultAction: "SCMP_ACT_ERRNO";
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: SeccompRule[];
}

const EPERM = 1;
const ENOSYS = 38;

/** clone/unshare flags that create namespaces: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. */
export const CLONE_NAMESPACE_FLAGS = 0x7e020000;
/** CLONE_NEWTIME: only unshare/clone3 can pass it (in clone(2) the low byte is the exit signal). */
const CLONE_NEWTIME = 0x80;

/** Socket address families a worker may open: unix, IPv4, IPv6 and netlink (getifaddrs). */
export const ALLOWED_SOCKET_FAMILIES = { AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16 } as const;

const words = (s: string): string[] => s.split(/\s+/).filter(Boolean);

/**
 * Allowed without conditions, by group. Names that one architecture lacks (x86_64's
 * legacy `open`, `fork`…) or that the node's libseccomp does not know yet are
 * skipped by runc; such calls then fail with ENOSYS and libc falls back.
 */
const ALLOWED = [
  // Memory. (mbind/set_mempolicy/migrate_pages/move_pages stay out: NUMA placement is the node's.)
  "brk mmap munmap mremap mprotect madvise msync mincore mlock mlock2 munlock mlockall munlockall",
  "membarrier memfd_create pkey_alloc pkey_free pkey_mprotect map_shadow_stack mseal cachestat",
  // Processes and threads (clone, clone3, unshare and personality have rules below).
  "fork vfork execve execveat exit exit_group wait4 waitid kill tkill tgkill pidfd_open pidfd_send_signal",
  "set_tid_address set_robust_list get_robust_list rseq arch_prctl prctl seccomp",
  "futex futex_waitv futex_wake futex_wait futex_requeue",
  "sched_yield sched_getaffinity sched_setaffinity sched_getparam sched_setparam sched_getscheduler",
  "sched_setscheduler sched_getattr sched_setattr sched_get_priority_max sched_get_priority_min",
  "sched_rr_get_interval getpriority setpriority ioprio_get ioprio_set getcpu",
  // Identity: without capabilities a process can only switch among its own ids, and only drop caps.
  "getpid getppid gettid getpgid setpgid getpgrp getsid setsid getuid geteuid getgid getegid",
  "getresuid getresgid getgroups setuid setgid setreuid setregid setresuid setresgid setgroups",
  "setfsuid setfsgid capget capset",
  // Signals, limits, system information.
  "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigpending rt_sigtimedwait",
  "rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack pause restart_syscall",
  "getrlimit setrlimit prlimit64 getrusage times sysinfo uname umask getrandom",
  // Time: reading and sleeping (settimeofday, clock_settime, clock_adjtime, adjtimex stay out).
  "clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time alarm getitimer setitimer",
  "timer_create timer_settime timer_gettime timer_getoverrun timer_delete",
  "timerfd_create timerfd_settime timerfd_gettime",
  // File descriptors and I/O (io_uring stays out: libuv falls back to its thread pool).
  "read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek",
  "open openat openat2 creat close close_range dup dup2 dup3 fcntl flock ioctl",
  "fsync fdatasync sync syncfs sync_file_range truncate ftruncate fallocate fadvise64 readahead",
  "sendfile copy_file_range splice tee vmsplice",
  "pipe pipe2 select pselect6 poll ppoll epoll_create epoll_create1 epoll_ctl epoll_wait",
  "epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd signalfd4",
  "inotify_init inotify_init1 inotify_add_watch inotify_rm_watch",
  "io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents",
  // Files and directories.
  "stat fstat lstat newfstatat statx statfs fstatfs access faccessat faccessat2",
  "getcwd chdir fchdir getdents getdents64 mkdir mkdirat rmdir rename renameat renameat2",
  "link linkat unlink unlinkat symlink symlinkat readlink readlinkat mknod mknodat",
  "chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat utime utimes utimensat futimesat",
  "getxattr lgetxattr fgetxattr getxattrat listxattr llistxattr flistxattr listxattrat",
  "setxattr lsetxattr fsetxattr setxattrat removexattr lremovexattr fremovexattr removexattrat",
  "file_getattr file_setattr",
  // Sockets (socket and socketpair have rules below).
  "bind listen accept accept4 connect getsockname getpeername sendto recvfrom sendmsg recvmsg",
  "sendmmsg recvmmsg shutdown setsockopt getsockopt",
  // IPC inside the worker's own IPC namespace.
  "shmget shmat shmdt shmctl semget semop semtimedop semctl msgget msgsnd msgrcv msgctl",
  "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr",
  // Self-sandboxing only ever takes rights away.
  "landlock_create_ruleset landlock_add_rule landlock_restrict_self",
].flatMap(words);

/** Seccomp architecture tokens of the node's own 64-bit ABI. */
const ARCHITECTURES: Record<string, string> = { x64: "SCMP_ARCH_X86_64", arm64: "SCMP_ARCH_AARCH64" };

/**
 * The `linux.seccomp` object of every worker: an allowlist (anything not listed
 * fails with EPERM) for the node's 64-bit ABI (`arch`, default this process's:
 * x64 or arm64). 32-bit ABIs (x86, x32, arm) are not listed, so their calls are
 * refused too: Lambda runs only 64-bit code, and x86's socketcall(2) would
 * bypass the socket family rule. clone may not create namespaces, clone3 fails
 * with ENOSYS (its flags sit in memory seccomp cannot read; glibc then falls
 * back to clone), and sockets are limited to {@link ALLOWED_SOCKET_FAMILIES}.
 */
export function workerSeccompProfile(arch: string = hostArch): SeccompProfile {
  const architecture = ARCHITECTURES[arch];
  if (!architecture)
    throw new Error(`no worker seccomp profile for architecture ${arch} (x64 and arm64 only)`);
  const noNamespaces = (mask: number): SeccompArg[] => [
    { index: 0, value: mask, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" },
  ];
  const firstArgIs = (names: string[], value: number): SeccompRule => ({
    names,
    action: "SCMP_ACT_ALLOW",
    args: [{ index: 0, value, op: "SCMP_CMP_EQ" }],
  });
  return {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: EPERM,
    architectures: [architecture],
    syscalls: [
      { names: ALLOWED, action: "SCMP_ACT_ALLOW" },
      // Flags are the first argument of clone on x86_64 and aarch64 (not on s390).
      { names: ["clone"], action: "SCMP_ACT_ALLOW", args: noNamespaces(CLONE_NAMESPACE_FLAGS) },
      {
        names: ["unshare"],
        action: "SCMP_ACT_ALLOW",
        args: noNamespaces(CLONE_NAMESPACE_FLAGS | CLONE_NEWTIME),
      },
      { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS },
      ...Object.values(ALLOWED_SOCKET_FAMILIES).map((family) => firstArgIs(["socket"], family)),
      firstArgIs(["socketpair"], ALLOWED_SOCKET_FAMILIES.AF_UNIX),
      // Linux personality, and the query form (0xffffffff) that libraries use to read it.
      firstArgIs(["personality"], 0),
      firstArgIs(["personality"], 0xffffffff),
    ],
  };
}
