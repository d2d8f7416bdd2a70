#!/usr/bin/env python3
"""Raw NBD clients checking coblk-nbd's TLS modes (the NBD protocol
document's TLS section) and the state reset at STARTTLS (CVE-2021-3716).

Usage: nbd-tls-client.py MODE SOCKET CERTDIR
  MODE on       the server runs --tls=on with export "exp" (64 MiB): a client
                negotiates structured replies and base:allocation in
                plaintext, upgrades, and must then find the server fresh
                (no structured replies, no metadata context); a second
                STARTTLS is refused; plaintext clients are still served.
  MODE require  --tls=require: every option but STARTTLS and ABORT gets
                NBD_REP_ERR_TLS_REQD before TLS, EXPORT_NAME disconnects,
                STARTTLS with data is invalid; after TLS all works.
  MODE off      a server without TLS: STARTTLS gets NBD_REP_ERR_POLICY.
"""
import socket
import ssl
import struct
import sys

MODE, PATH, CERTS = sys.argv[1], sys.argv[2], sys.argv[3]
OPTS = b"IHAVEOPT"
REP_MAGIC = 0x3E889045565A9
ACK, SERVER, INFO, META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_TLS_REQD = ERR + 1, ERR + 2, ERR + 3, ERR + 5
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META = 6, 7, 8, 9, 10
FLAG_SEND_DF = 1 << 7
SIMPLE_MAGIC, STRUCT_MAGIC = 0x67446698, 0x668E33EF


def check(name, ok):
    if not ok:
        print("FAIL: " + name)
        sys.exit(1)
    print("ok: " + name)


def recvall(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError("server closed the connection")
        b += d
    return b


def conn():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(PATH)
    g = recvall(s, 18)
    assert g[:8] == b"NBDMAGIC" and g[8:16] == OPTS, "bad greeting"
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    return s


def closed(s):
    try:
        while s.recv(4096):
            pass
        return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def opt(s, o, data=b""):
    s.sendall(OPTS + struct.pack(">II", o, len(data)) + data)


def reply(s, want_opt):
    magic, o, typ, ln = struct.unpack(">QIII", recvall(s, 20))
    assert magic == REP_MAGIC and o == want_opt, "bad option reply"
    return typ, recvall(s, ln)


def replies(s, o):
    """Every reply to option o up to the final ACK or error: [(type, data)]."""
    out = []
    while True:
        t, d = reply(s, o)
        out.append((t, d))
        if t == ACK or t & ERR:
            return out


def meta_data(query=b"base:allocation", name=b"exp"):
    return (struct.pack(">I", len(name)) + name + struct.pack(">I", 1) +
            struct.pack(">I", len(query)) + query)


def go(s, o=OPT_GO, name=b"exp"):
    opt(s, o, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    flags = None
    for t, d in replies(s, o):
        if t == INFO and struct.unpack(">H", d[:2])[0] == 0:
            flags = struct.unpack(">QH", d[2:12])[1]
        elif t != ACK:
            return t, None
    return ACK, flags


def starttls(s):
    opt(s, OPT_STARTTLS)
    t, _ = reply(s, OPT_STARTTLS)
    assert t == ACK, "STARTTLS refused: 0x%x" % t
    ctx = ssl.create_default_context(cafile=CERTS + "/ca-cert.pem")
    return ctx.wrap_socket(s, server_hostname="localhost")


def state_reset():
    s = conn()
    opt(s, OPT_STRUCTURED)
    check("plaintext: structured replies negotiated", reply(s, OPT_STRUCTURED)[0] == ACK)
    opt(s, OPT_SET_META, meta_data())
    r = replies(s, OPT_SET_META)
    check("plaintext: base:allocation selected",
          [t for t, _ in r] == [META, ACK] and r[0][1][4:] == b"base:allocation")
    s = starttls(s)
    # Structured replies were forgotten: SET_META_CONTEXT needs them again.
    opt(s, OPT_SET_META, meta_data())
    check("after STARTTLS: structured replies are reset",
          replies(s, OPT_SET_META)[-1][0] == ERR_INVALID)
    opt(s, OPT_STARTTLS)
    check("second STARTTLS: NBD_REP_ERR_INVALID", reply(s, OPT_STARTTLS)[0] == ERR_INVALID)
    t, flags = go(s)
    check("after STARTTLS: GO works", t == ACK)
    check("after STARTTLS: no DF flag (no structured replies)", not flags & FLAG_SEND_DF)
    # Transmission: a read gets a simple reply; block status has no context.
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 512))
    magic, err, cookie = struct.unpack(">IIQ", recvall(s, 16))
    check("after STARTTLS: a read gets a simple reply",
          magic == SIMPLE_MAGIC and err == 0 and cookie == 7)
    recvall(s, 512)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 7, 8, 0, 512))
    magic, err, cookie = struct.unpack(">IIQ", recvall(s, 16))
    check("after STARTTLS: block status without a context is EINVAL",
          magic == SIMPLE_MAGIC and err == 22 and cookie == 8)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 9, 0, 0))  # DISC
    s.close()

    # The same in TLS, negotiated again, works in full.
    s = starttls(conn())
    opt(s, OPT_STRUCTURED)
    check("in TLS: structured replies negotiated", reply(s, OPT_STRUCTURED)[0] == ACK)
    opt(s, OPT_SET_META, meta_data())
    check("in TLS: base:allocation selected",
          [t for t, _ in replies(s, OPT_SET_META)] == [META, ACK])
    t, flags = go(s)
    check("in TLS: GO with the DF flag", t == ACK and flags & FLAG_SEND_DF)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 512))
    magic = struct.unpack(">I", recvall(s, 4))[0]
    check("in TLS: a read gets a structured reply", magic == STRUCT_MAGIC)
    s.close()


def plaintext_still_served():
    s = conn()
    t, flags = go(s)
    check("tls=on: a plaintext client is served", t == ACK)
    s.close()


def require():
    for o, data in ((OPT_LIST, b""), (OPT_STRUCTURED, b""), (OPT_SET_META, meta_data()),
                    (OPT_LIST_META, meta_data()),
                    (OPT_INFO, struct.pack(">I", 3) + b"exp" + struct.pack(">H", 0)),
                    (OPT_GO, struct.pack(">I", 3) + b"exp" + struct.pack(">H", 0)),
                    (99, b"xyz")):
        s = conn()
        opt(s, o, data)
        t, msg = reply(s, o)
        check("require: option %d before TLS gets NBD_REP_ERR_TLS_REQD" % o,
              t == ERR_TLS_REQD and b"TLS" in msg)
        s.close()
    s = conn()
    opt(s, OPT_EXPORT_NAME, b"exp")
    check("require: NBD_OPT_EXPORT_NAME before TLS disconnects", closed(s))
    s = conn()
    opt(s, OPT_STARTTLS, b"x")
    check("require: STARTTLS with data is invalid", reply(s, OPT_STARTTLS)[0] == ERR_INVALID)
    opt(s, OPT_ABORT)
    check("require: ABORT before TLS is acknowledged", reply(s, OPT_ABORT)[0] == ACK)
    s.close()
    s = starttls(conn())
    opt(s, OPT_LIST)
    r = replies(s, OPT_LIST)
    check("require: LIST works in TLS", [t for t, _ in r] == [SERVER, ACK])
    check("require: GO works in TLS", go(s)[0] == ACK)
    s.close()
    # Plaintext bytes sent right behind STARTTLS are not taken as TLS.
    s = conn()
    s.sendall(OPTS + struct.pack(">II", OPT_STARTTLS, 0) + OPTS + struct.pack(">II", 3, 0))
    t, _ = reply(s, OPT_STARTTLS)
    check("require: injected plaintext after STARTTLS ends the connection",
          t == ACK and closed(s))


def off():
    s = conn()
    opt(s, OPT_STARTTLS)
    check("no TLS: STARTTLS gets NBD_REP_ERR_POLICY", reply(s, OPT_STARTTLS)[0] == ERR_POLICY)
    check("no TLS: the connection goes on", go(s)[0] == ACK)
    s.close()


if MODE == "on":
    state_reset()
    plaintext_still_served()
elif MODE == "require":
    require()
else:
    off()
