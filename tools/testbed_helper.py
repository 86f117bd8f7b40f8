#!/usr/bin/env python3
"""Helpers for tools/testbed.sh: a counting sink and a timed TCP sender (cubic)."""
import hashlib, json, socket, sys, time

def sink(port, out):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1" if out.endswith("braid") else "0.0.0.0", port))
    s.listen(1)
    c, _ = s.accept()
    h = hashlib.sha256()
    n, first, last, gap, gap_at, marks = 0, None, None, 0.0, 0.0, []
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        now = time.monotonic()
        if first is None:
            first = now
        elif now - last > gap:
            gap, gap_at = now - last, last - first
        last = now
        n += len(b)
        h.update(b)
        marks.append((round(now - first, 3), n))
    c.close()
    dur = (last - first) if first is not None and last > first else 0.0
    res = {"bytes": n, "seconds": dur, "mbit": n * 8 / dur / 1e6 if dur else 0.0,
           "sha256": h.hexdigest(), "max_gap": gap, "max_gap_at": gap_at}
    open(out + ".json", "w").write(json.dumps(res))

def send(host, port, seconds):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    s.connect((host, port))
    buf = b"\0" * (1 << 16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(buf)
    s.close()

if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(int(sys.argv[2]), sys.argv[3])
    else:
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
