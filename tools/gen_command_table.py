#!/usr/bin/env python3
"""Generate src/route/command/table.rs from a running redis-server's COMMAND reply.

The proxy needs Redis's own command metadata (arity, flags, key specs, subcommands)
to validate requests and find their keys without asking a server on the hot path.
Rather than copying it by hand, this script asks a real server and writes the
table as Rust statics, sorted by name so that the lookup can binary-search it.

Usage:
    python3 tools/gen_command_table.py [--host 127.0.0.1] [--port 6379]
                                       [--out src/route/command/table.rs]

The script has no dependencies beyond the Python 3 standard library: it speaks
just enough RESP2 over a plain socket.  It fails loudly on any flag or key-spec
shape it does not know, so a newer Redis cannot silently produce a table whose
bits the Rust side does not understand.
"""

import argparse
import socket
import sys

# Command flags as COMMAND prints them -> the Rust const that stands for each.
# Keep in sync with the FLAG_* consts in src/route/command/mod.rs.
COMMAND_FLAGS = {
    "write": "FLAG_WRITE",
    "readonly": "FLAG_READONLY",
    "denyoom": "FLAG_DENYOOM",
    "module": "FLAG_MODULE",
    "admin": "FLAG_ADMIN",
    "pubsub": "FLAG_PUBSUB",
    "noscript": "FLAG_NOSCRIPT",
    "blocking": "FLAG_BLOCKING",
    "loading": "FLAG_LOADING",
    "stale": "FLAG_STALE",
    "skip_monitor": "FLAG_SKIP_MONITOR",
    "skip_slowlog": "FLAG_SKIP_SLOWLOG",
    "asking": "FLAG_ASKING",
    "fast": "FLAG_FAST",
    "no_auth": "FLAG_NO_AUTH",
    "may_replicate": "FLAG_MAY_REPLICATE",
    "sentinel": "FLAG_SENTINEL",
    "only_sentinel": "FLAG_ONLY_SENTINEL",
    "no_mandatory_keys": "FLAG_NO_MANDATORY_KEYS",
    "protected": "FLAG_PROTECTED",
    "no_async_loading": "FLAG_NO_ASYNC_LOADING",
    "no_multi": "FLAG_NO_MULTI",
    "movablekeys": "FLAG_MOVABLEKEYS",
    "allow_busy": "FLAG_ALLOW_BUSY",
}

# Key-spec flags as COMMAND prints them -> Rust const (KS_* in src/route/command/mod.rs).
KEY_SPEC_FLAGS = {
    "RO": "KS_RO",
    "RW": "KS_RW",
    "OW": "KS_OW",
    "RM": "KS_RM",
    "access": "KS_ACCESS",
    "update": "KS_UPDATE",
    "insert": "KS_INSERT",
    "delete": "KS_DELETE",
    "not_key": "KS_NOT_KEY",
    "incomplete": "KS_INCOMPLETE",
    "variable_flags": "KS_VARIABLE_FLAGS",
}

MAX_WIDTH = 100  # rustfmt's default max_width


class RespError(Exception):
    """An error reply from the server."""


class Resp:
    """A minimal blocking RESP2 client: enough for COMMAND and INFO."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self.read()

    def _line(self):
        line = self.rfile.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed mid-reply")
        return line[:-2]

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rfile.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed mid-reply")
            return data[:-2].decode()
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise ValueError("unexpected RESP type byte %r" % kind)

    def close(self):
        self.rfile.close()
        self.sock.close()


def pairs(flat):
    """Turns a RESP2-flattened map [k1, v1, k2, v2, ...] into a dict."""
    if len(flat) % 2:
        raise ValueError("odd-length map: %r" % (flat,))
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def parse_key_spec(raw):
    """Returns (begin, find, flags) in a neutral form for one key spec."""
    spec = pairs(raw)
    flags = []
    for f in spec.get("flags", []):
        if f not in KEY_SPEC_FLAGS:
            raise ValueError("unknown key-spec flag %r" % f)
        flags.append(KEY_SPEC_FLAGS[f])

    bs = pairs(spec["begin_search"])
    bs_args = pairs(bs["spec"]) if bs["spec"] else {}
    if bs["type"] == "index":
        begin = ("index", int(bs_args["index"]))
    elif bs["type"] == "keyword":
        begin = ("keyword", bs_args["keyword"], int(bs_args["startfrom"]))
    elif bs["type"] == "unknown":
        begin = ("unknown",)
    else:
        raise ValueError("unknown begin_search type %r" % bs["type"])

    fk = pairs(spec["find_keys"])
    fk_args = pairs(fk["spec"]) if fk["spec"] else {}
    if fk["type"] == "range":
        find = (
            "range",
            int(fk_args["lastkey"]),
            int(fk_args["keystep"]),
            int(fk_args["limit"]),
        )
    elif fk["type"] == "keynum":
        find = (
            "keynum",
            int(fk_args["keynumidx"]),
            int(fk_args["firstkey"]),
            int(fk_args["keystep"]),
        )
    elif fk["type"] == "unknown":
        find = ("unknown",)
    else:
        raise ValueError("unknown find_keys type %r" % fk["type"])
    return begin, find, flags


def parse_command(raw):
    """Turns one COMMAND entry into a dict (recursing into subcommands)."""
    if len(raw) < 10:
        raise ValueError("COMMAND entry too short (need Redis >= 7.0): %r" % (raw[:1],))
    name, arity, flags = raw[0], raw[1], raw[2]
    flag_consts = []
    for f in flags:
        if f not in COMMAND_FLAGS:
            raise ValueError("unknown command flag %r on %s" % (f, name))
        flag_consts.append(COMMAND_FLAGS[f])
    return {
        "name": name.lower(),
        "arity": int(arity),
        "flags": flag_consts,
        "key_specs": [parse_key_spec(k) for k in raw[8]],
        "subcommands": sorted(
            (parse_command(s) for s in raw[9]), key=lambda c: c["name"].encode()
        ),
    }


def rust_str(s):
    """A Rust string literal for s (ASCII command names and keywords)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bitor_field(indent, field, consts):
    """Formats `field: A | B,` the way rustfmt does: one line, or one operand per line."""
    pad = " " * indent
    value = " | ".join(consts) if consts else "0"
    line = "%s%s: %s," % (pad, field, value)
    if len(line) <= MAX_WIDTH:
        return [line]
    out = ["%s%s: %s" % (pad, field, consts[0])]
    for c in consts[1:]:
        out.append("%s    | %s" % (pad, c))
    out[-1] += ","
    return out


def emit_key_spec(ks, indent):
    begin, find, flags = ks
    pad = " " * indent
    lines = []
    if begin[0] == "index":
        lines.append("%s    begin: BeginSearch::Index(%d)," % (pad, begin[1]))
    elif begin[0] == "keyword":
        lines += [
            "%s    begin: BeginSearch::Keyword {" % pad,
            "%s        keyword: %s," % (pad, rust_str(begin[1])),
            "%s        start_from: %d," % (pad, begin[2]),
            "%s    }," % pad,
        ]
    else:
        lines.append("%s    begin: BeginSearch::Unknown," % pad)
    if find[0] == "range":
        lines += [
            "%s    find: FindKeys::Range {" % pad,
            "%s        last_key: %d," % (pad, find[1]),
            "%s        key_step: %d," % (pad, find[2]),
            "%s        limit: %d," % (pad, find[3]),
            "%s    }," % pad,
        ]
    elif find[0] == "keynum":
        lines += [
            "%s    find: FindKeys::KeyNum {" % pad,
            "%s        key_num_idx: %d," % (pad, find[1]),
            "%s        first_key: %d," % (pad, find[2]),
            "%s        key_step: %d," % (pad, find[3]),
            "%s    }," % pad,
        ]
    else:
        lines.append("%s    find: FindKeys::Unknown," % pad)
    lines += bitor_field(indent + 4, "flags", flags)
    return lines


def emit_list(field, items, indent, emit_item, type_name):
    """Formats `field: &[...]` like rustfmt: empty, single struct overflowing, or vertical."""
    pad = " " * indent
    if not items:
        return ["%s%s: &[]," % (pad, field)]
    if len(items) == 1:
        # rustfmt lets a lone struct literal overflow onto the `&[` line.
        body = emit_item(items[0], indent)
        return ["%s%s: &[%s {" % (pad, field, type_name)] + body + ["%s}]," % pad]
    lines = ["%s%s: &[" % (pad, field)]
    for item in items:
        lines.append("%s    %s {" % (pad, type_name))
        lines += emit_item(item, indent + 4)
        lines.append("%s    }," % pad)
    lines.append("%s]," % pad)
    return lines


def emit_command(cmd, indent):
    """The fields of one CommandSpec literal, indented for a body at `indent`."""
    pad = " " * indent
    lines = [
        "%s    name: %s," % (pad, rust_str(cmd["name"])),
        "%s    arity: %d," % (pad, cmd["arity"]),
    ]
    lines += bitor_field(indent + 4, "flags", cmd["flags"])
    lines += emit_list("key_specs", cmd["key_specs"], indent + 4, emit_key_spec, "KeySpec")
    lines += emit_list("subcommands", cmd["subcommands"], indent + 4, emit_command, "CommandSpec")
    return lines


def render(commands, version, host, port):
    total = len(commands) + sum(len(c["subcommands"]) for c in commands)
    out = [
        "//! Redis's command table: GENERATED FILE, DO NOT EDIT BY HAND.",
        "//!",
        "//! Generated by `tools/gen_command_table.py` from the `COMMAND` reply of redis-server %s"
        % version,
        "//! (%d commands, %d with subcommands counted)." % (len(commands), total),
        "//! To regenerate, start a redis-server and run from the crate root:",
        "//!",
        "//! ```text",
        "//! python3 tools/gen_command_table.py --host 127.0.0.1 --port 6379 --out src/route/command/table.rs",
        "//! ```",
        "//!",
        "//! Invariant: `COMMANDS` and every `subcommands` slice are sorted by name (byte order), so",
        "//! `super::lookup` can binary-search them.",
        "",
        "use super::*;",
        "",
        "/// The Redis version whose `COMMAND` reply this table was generated from.",
        "pub const REDIS_VERSION: &str = %s;" % rust_str(version),
        "",
        "/// Every top-level command of Redis %s, sorted by name; subcommands hang off their" % version,
        "/// container.",
        "pub static COMMANDS: &[CommandSpec] = &[",
    ]
    for cmd in commands:
        out.append("    CommandSpec {")
        out += emit_command(cmd, 4)
        out.append("    },")
    out.append("];")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--out", default="src/route/command/table.rs")
    args = ap.parse_args()

    conn = Resp(args.host, args.port)
    try:
        info = conn.call("INFO", "server")
        version = "unknown"
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                version = line.split(":", 1)[1].strip()
        raw = conn.call("COMMAND")
    finally:
        conn.close()

    commands = sorted((parse_command(c) for c in raw), key=lambda c: c["name"].encode())
    names = [c["name"] for c in commands]
    if len(set(names)) != len(names):
        sys.exit("duplicate command names in COMMAND reply")
    text = render(commands, version, args.host, args.port)
    with open(args.out, "w", encoding="ascii") as f:
        f.write(text)
    total = len(commands) + sum(len(c["subcommands"]) for c in commands)
    print("wrote %s: %d commands (%d with subcommands) from Redis %s" % (args.out, len(commands), total, version))


if __name__ == "__main__":
    main()
