#!/usr/bin/env python3
"""vm-smoke.py - boot a guest image (scripts/vm-image.sh) against a running host-mux and check
that frames cross it: README.md's QEMU line through scripts/vm-qemu.sh, root login on the serial
console, the vDPDK device bound to vfio-pci as README.md says, then `vdpdk-guestctl
vdpdk-vm:auto` sends COUNT frames and receives them back (configs/pair.toml's wire reflects
them). Prints the console transcript as it goes and a timing summary; powers the guest off.

  ./target/release/host-mux --config configs/pair.toml &     # vm1 on /tmp/vdpdk/vm1.sock
  python3 scripts/vm-smoke.py --image guest.qcow2

Exit 0 when every frame came back, 1 otherwise. Options: --socket (default
/tmp/vdpdk/vm1.sock), --accel kvm|tcg (default: kvm where kvm_intel/kvm_amd is loaded, else tcg,
as tests/vm/qemu.sh picks), --count (default 100), --timeout seconds for the boot (default 600).
"""

import argparse
import os
import re
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r")


def default_accel():
    if os.path.isdir("/sys/module/kvm_pvm"):
        return "tcg"  # this machine's /dev/kvm cannot run stock kernels
    if os.access("/dev/kvm", os.W_OK) and (
        os.path.isdir("/sys/module/kvm_intel") or os.path.isdir("/sys/module/kvm_amd")
    ):
        return "kvm"
    return "tcg"


class Console:
    """QEMU's serial console on its stdin/stdout."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        self.buf = b""

    def expect(self, pattern, timeout):
        """Reads until `pattern` (bytes regex) appears; returns the match. Consumes up to it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(ANSI.sub(b"", self.buf))
            if m:
                clean = ANSI.sub(b"", self.buf)
                self.buf = clean[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {pattern!r} within {timeout} s")
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 1.0))
            if r:
                data = os.read(self.p.stdout.fileno(), 65536)
                if not data:
                    raise EOFError(f"QEMU exited ({self.p.wait()}) waiting for {pattern!r}")
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
                self.buf += data

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def run(self, cmd, timeout=120):
        """Runs a shell command in the guest; returns (exit code, output)."""
        self.send(f"{cmd}; echo \"@RC=$?@\"")
        m = self.expect(rb"([\s\S]*?)@RC=(\d+)@", timeout)
        return int(m.group(2)), m.group(1).decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default="guest.qcow2")
    ap.add_argument("--socket", default="/tmp/vdpdk/vm1.sock")
    ap.add_argument("--accel", choices=["kvm", "tcg"], default=default_accel())
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    for path, what in [(a.image, "image (scripts/vm-image.sh)"),
                       (a.socket, "host-mux socket (is host-mux running?)")]:
        if not os.path.exists(path):
            sys.exit(f"vm-smoke.py: no {what}: {path}")
    cpu = ["-cpu", "host"] if a.accel == "kvm" else []
    # README.md's QEMU line, with the accelerator this host can run.
    argv = ["bash", os.path.join(HERE, "vm-qemu.sh"), "-accel", a.accel, *cpu,
            "-smp", "2", "-m", "2G",
            "-machine", "q35,memory-backend=mem",
            "-object", "memory-backend-memfd,id=mem,size=2G,share=on",
            "-device", "intel-iommu,caching-mode=on",
            "-device", '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s"}}'
            % a.socket,
            "-drive", f"file={a.image},if=virtio", "-nographic"]
    print("+ " + " ".join(argv[1:]), flush=True)
    t0 = time.monotonic()
    marks = []
    vm = Console(argv)
    ok = False
    try:
        vm.expect(rb"login: ", a.timeout)
        marks.append(("login prompt", time.monotonic() - t0))
        vm.send("root")
        vm.expect(rb"# ", 60)
        vm.send("PS1='guest# '; dmesg -n 1")
        vm.expect(rb"guest# ", 30)
        # README.md's guest steps. The device's address depends on the QEMU line (README's
        # keeps QEMU's default VGA and NIC, so it is not 00:01.0): found by its ID.
        steps = [
            "modprobe vfio-pci",
            "BDF=$(lspci -Dn -d 1af4:7abc | cut -d' ' -f1); echo \"vDPDK device: $BDF\"",
            "echo vfio-pci > /sys/bus/pci/devices/$BDF/driver_override",
            "echo $BDF > /sys/bus/pci/drivers_probe",
            "readlink /sys/bus/pci/devices/$BDF/driver | grep -q /vfio-pci$",
            "grep HugePages_Total /proc/meminfo",
        ]
        for s in steps:
            rc, _ = vm.run(s)
            if rc != 0:
                raise RuntimeError(f"`{s}` failed with {rc}")
        marks.append(("device bound", time.monotonic() - t0))
        n = a.count
        rc, out = vm.run(
            f"printf 'info\\nsend {n} 128 02:00:00:00:00:fe\\nrecv {n} 20000\\nstats\\nquit\\n'"
            " | vdpdk-guestctl vdpdk-vm:auto", 300)
        marks.append(("guestctl done", time.monotonic() - t0))
        sent = re.search(r"SENT (\d+) (\S+)", out)
        got = re.search(r"RECV (\d+)", out)
        ok = rc == 0 and sent and got and int(sent.group(1)) == n and int(got.group(1)) == n
        vm.send("poweroff")
        try:
            vm.p.wait(120)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if vm.p.poll() is None:
            vm.p.kill()
            vm.p.wait()
    print()
    for what, t in marks:
        print(f"vm-smoke.py: {what} after {t:.0f} s")
    print(f"vm-smoke.py: {'OK' if ok else 'FAILED'}: {a.count} frames sent and "
          f"{'all' if ok else 'not all'} received back through host-mux "
          f"({time.monotonic() - t0:.0f} s in all, --accel {a.accel})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
