#!/usr/bin/env python3
"""Wait until a Kafka broker answers a Metadata request (standard library only).

    python3 kafka_ready.py 127.0.0.1:19092 --timeout 60 [--pid PID]

Sends a MetadataRequest v0 (all topics) on a raw socket and checks the response names at
least one broker. Exit 0 when it does; 1 on timeout; 2 when --pid is given and that process
died while waiting.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time

METADATA_API_KEY = 3


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> int:
    """Number of brokers in the broker's metadata response (raises OSError on failure)."""
    client_id = b"ccmon-ready"
    # Request header v1: api_key, api_version, correlation_id, client_id; body v0: topics
    # array, -1 would mean "all" only from v1 on; v0 takes an empty array as "all topics".
    body = struct.pack(">hhih", METADATA_API_KEY, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv(sock, 4))[0]
        payload = _recv(sock, size)
    correlation_id, brokers = struct.unpack(">ii", payload[:8])
    if correlation_id != 1:
        raise OSError(f"unexpected correlation id {correlation_id}")
    return brokers


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--pid", type=int, help="give up when this process dies")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            if metadata_brokers(host, int(port)) > 0:
                if not args.quiet:
                    print(" ready", file=sys.stderr)
                return 0
        except (OSError, struct.error):
            pass
        if args.pid is not None and not _alive(args.pid):
            print(" the broker process died", file=sys.stderr)
            return 2
        if time.monotonic() > deadline:
            print(f" no metadata answer from {args.address} within {args.timeout:.0f} s", file=sys.stderr)
            return 1
        if not args.quiet:
            print(".", end="", file=sys.stderr, flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
