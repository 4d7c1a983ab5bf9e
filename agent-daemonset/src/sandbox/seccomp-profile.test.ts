// @esb-test unit: needs no test environment (`make test-unit` runs it).
import { describe, it, expect } from "@jest/globals";
import { ALLOWED_SOCKET_FAMILIES, CLONE_NAMESPACE_FLAGS, workerSeccompProfile } from "./seccomp-profile.js";

describe("workerSeccompProfile", () => {
  const profile = workerSeccompProfile("x64");
  const rulesFor = (name: string) => profile.syscalls.filter((r) => r.names.includes(name));
  const allowedAlways = new Set(
    profile.syscalls.filter((r) => r.action === "SCMP_ACT_ALLOW" && !r.args).flatMap((r) => r.names),
  );

  it("is an allowlist: anything not listed fails with EPERM", () => {
    expect(profile.defaultAction).toBe("SCMP_ACT_ERRNO");
    expect(profile.defaultErrnoRet).toBe(1);
  });

  it("covers the node's 64-bit ABI only", () => {
    expect(profile.architectures).toEqual(["SCMP_ARCH_X86_64"]);
    expect(workerSeccompProfile("arm64").architectures).toEqual(["SCMP_ARCH_AARCH64"]);
    expect(() => workerSeccompProfile("ia32")).toThrow(/x64 and arm64/);
  });

  it("allows what Node.js, Python and busybox were seen to call", () => {
    for (const name of [
      "openat",
      "read",
      "write",
      "mmap",
      "futex",
      "epoll_wait",
      "execve",
      "wait4",
      "getrandom",
    ])
      expect(allowedAlways).toContain(name);
    for (const name of ["accept4", "connect", "sendmsg", "recvfrom", "inotify_add_watch", "rseq", "statx"])
      expect(allowedAlways).toContain(name);
  });

  it("refuses what reaches beyond the worker", () => {
    const denied = [
      "mount",
      "umount2",
      "pivot_root",
      "setns",
      "chroot",
      "open_tree",
      "move_mount",
      "fsopen",
      "init_module",
      "finit_module",
      "delete_module",
      "bpf",
      "perf_event_open",
      "ptrace",
      "process_vm_readv",
      "process_vm_writev",
      "add_key",
      "keyctl",
      "request_key",
      "kexec_load",
      "kexec_file_load",
      "reboot",
      "swapon",
      "swapoff",
      "settimeofday",
      "clock_settime",
      "clock_adjtime",
      "adjtimex",
      "acct",
      "quotactl",
      "syslog",
      "userfaultfd",
      "io_uring_setup",
      "io_uring_enter",
      "open_by_handle_at",
      "name_to_handle_at",
      "move_pages",
      "migrate_pages",
      "sethostname",
      "setdomainname",
      "iopl",
      "ioperm",
      "kcmp",
      "pidfd_getfd",
      "socketcall",
    ];
    for (const name of denied) expect(rulesFor(name)).toEqual([]);
  });

  it("lets clone and unshare run only without namespace flags, and sends clone3 to the clone fallback", () => {
    expect(CLONE_NAMESPACE_FLAGS).toBe(0x7e020000);
    expect(rulesFor("clone")).toEqual([
      {
        names: ["clone"],
        action: "SCMP_ACT_ALLOW",
        args: [{ index: 0, value: 0x7e020000, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }],
      },
    ]);
    expect(rulesFor("unshare")[0].args).toEqual([
      { index: 0, value: 0x7e020080, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" },
    ]);
    expect(rulesFor("clone3")).toEqual([{ names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 }]);
  });

  it("opens sockets of the unix, inet, inet6 and netlink families only", () => {
    const families = rulesFor("socket").map((r) => r.args?.[0].value);
    expect(families.sort((a, b) => a! - b!)).toEqual(Object.values(ALLOWED_SOCKET_FAMILIES));
    expect(rulesFor("socketpair").map((r) => r.args?.[0].value)).toEqual([1]);
  });

  it("lists every name once, in lower case", () => {
    const names = profile.syscalls.filter((r) => !r.args).flatMap((r) => r.names);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z_][a-z0-9_]*$/);
  });
});
