//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a load
//! balancer puts in front of a TCP connection to say whose it is, parsed
//! sans-IO.
//!
//! Behind a balancer every agent connection comes from the balancer's
//! address; the header carries the agent's own, for the per-address limits
//! and the logs. Only connections from `agent_proxy_protocol_from` are read
//! this way (a header from anyone else would let a client pick its own
//! address), and from those a header is required.
//!
//! [`next`] is fed what has been read so far and says how many more bytes
//! to read, exactly, so the driver never reads past the header into the
//! agent protocol that follows it; the longest header it accepts is
//! [`MAX_HEADER`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's first bytes; its line is at most 107 bytes with the CRLF.
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
/// Version 2's address block plus TLVs. HAProxy's addresses take 12 or 36
/// bytes; TLVs (ALPN, unique id, SSL details) are only sent when asked for,
/// and none of them is needed here, so a generous bound suffices.
const V2_MAX_PAYLOAD: usize = 512;
/// The longest header accepted.
pub const MAX_HEADER: usize = 16 + V2_MAX_PAYLOAD;
/// Both versions are at least this long (v1's shortest line is
/// `PROXY UNKNOWN\r\n`, 15 bytes), so reading this much first never reads
/// past a header.
const FIRST_READ: usize = 8;

/// What [`next`] makes of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more bytes, then call again with all of them.
    Need(usize),
    /// A complete header of `len` bytes. `source` is the client's address,
    /// or `None` when the balancer speaks for itself (v2 `LOCAL`, as in its
    /// health checks, or v1 `UNKNOWN`): then the connection's own address
    /// stands.
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol signature")]
    Signature,
    #[error("PROXY protocol v2 header of {0} bytes is over the limit")]
    Oversize(usize),
    #[error("PROXY protocol v1 line longer than 107 bytes")]
    LineTooLong,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Given the first `buf.len()` bytes of a connection, what comes next.
pub fn next(buf: &[u8]) -> Result<Step, ProxyError> {
    if buf.len() < FIRST_READ {
        return Ok(Step::Need(FIRST_READ - buf.len()));
    }
    if buf.starts_with(&V2_SIGNATURE[..FIRST_READ]) {
        v2(buf)
    } else if buf.starts_with(V1_PREFIX) {
        v1(buf)
    } else {
        Err(ProxyError::Signature)
    }
}

fn v2(buf: &[u8]) -> Result<Step, ProxyError> {
    if buf.len() < 16 {
        return Ok(Step::Need(16 - buf.len()));
    }
    if buf[..12] != V2_SIGNATURE {
        return Err(ProxyError::Signature);
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyError::Oversize(16 + payload));
    }
    let len = 16 + payload;
    if buf.len() < len {
        return Ok(Step::Need(len - buf.len()));
    }
    if buf.len() > len {
        return Err(ProxyError::Malformed("bytes past the header"));
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let addrs = &buf[16..];
    let source = match command {
        // LOCAL: the balancer's own connection; the address block, if any,
        // is to be ignored.
        0 => None,
        1 => match buf[13] {
            // TCP over IPv4: source, destination, source port, destination port.
            0x11 => {
                let a = addrs
                    .get(..12)
                    .ok_or(ProxyError::Malformed("short IPv4 address block"))?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([a[8], a[9]]),
                ))
            }
            0x21 => {
                let a = addrs
                    .get(..36)
                    .ok_or(ProxyError::Malformed("short IPv6 address block"))?;
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(ip)),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            // UNSPEC: the balancer does not know the source.
            0x00 => None,
            _ => return Err(ProxyError::Malformed("not a TCP address family")),
        },
        _ => return Err(ProxyError::Malformed("unknown command")),
    };
    Ok(Step::Done { len, source })
}

fn v1(buf: &[u8]) -> Result<Step, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::LineTooLong);
        }
        // One byte at a time: the line's length is unknown, and what
        // follows it is the agent's.
        return Ok(Step::Need(1));
    };
    let len = end + 2;
    if len != buf.len() {
        return Err(ProxyError::Malformed("bytes past the header"));
    }
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end])
        .map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Step::Done { len, source: None });
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("v1 needs four fields"));
    };
    let parse_ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => return Err(ProxyError::Malformed("unknown v1 family")),
        }
        .map_err(|_| ProxyError::Malformed("bad v1 address"))
    };
    let parse_port = |s: &str| -> Result<u16, ProxyError> {
        // The spec forbids leading zeros and signs; `parse` would take "+1".
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::Malformed("bad v1 port"));
        }
        s.parse().map_err(|_| ProxyError::Malformed("bad v1 port"))
    };
    let source = SocketAddr::new(parse_ip(src)?, parse_port(sport)?);
    parse_ip(dst)?;
    parse_port(dport)?;
    Ok(Step::Done {
        len,
        source: Some(source),
    })
}

/// Read a header from `r`, byte-exact; the address it carries (or `None`,
/// see [`Step::Done`]). The caller bounds the time it may take.
pub async fn read<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<SocketAddr>, ReadError> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::with_capacity(FIRST_READ);
    loop {
        match next(&buf)? {
            Step::Done { source, .. } => return Ok(source),
            Step::Need(n) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                r.read_exact(&mut buf[at..]).await?;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Header(#[from] ProxyError),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feed `bytes` the way the driver does: only as much as asked.
    fn drive(bytes: &[u8]) -> Result<(usize, Option<SocketAddr>), ProxyError> {
        let mut at = 0;
        loop {
            match next(&bytes[..at])? {
                Step::Done { len, source } => return Ok((len, source)),
                Step::Need(n) => {
                    assert!(at + n <= bytes.len(), "asked past the input: truncated");
                    at += n;
                }
            }
        }
    }

    fn v2_header(cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut p = src.to_vec();
        p.extend_from_slice(&[10, 0, 0, 11]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&7070u16.to_be_bytes());
        v2_header(1, 0x11, &p)
    }

    #[test]
    fn v2_ipv4_and_ipv6_with_tlvs_and_nothing_read_past_them() {
        let mut h = v2_tcp4([203, 0, 113, 7], 51000);
        let header_len = h.len();
        // The agent's first bytes follow; the parser never asks for them.
        h.extend_from_slice(b"agent hello");
        assert_eq!(
            drive(&h).unwrap(),
            (header_len, Some("203.0.113.7:51000".parse().unwrap()))
        );

        let mut p = Vec::new();
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&7070u16.to_be_bytes());
        // A TLV (type 0x04 NOOP, 3 bytes) is skipped.
        p.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
        let h = v2_header(1, 0x21, &p);
        assert_eq!(
            drive(&h).unwrap().1,
            Some("[2001:db8::1]:443".parse().unwrap())
        );
    }

    #[test]
    fn v2_local_means_the_balancer_itself() {
        assert_eq!(drive(&v2_header(0, 0, &[])).unwrap(), (16, None));
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.9 10.0.0.11 56324 7070\r\nagent";
        assert_eq!(
            drive(line).unwrap(),
            (line.len() - 5, Some("192.0.2.9:56324".parse().unwrap()))
        );
        let line = b"PROXY TCP6 2001:db8::2 2001:db8::1 1 7070\r\n";
        assert_eq!(
            drive(line).unwrap().1,
            Some("[2001:db8::2]:1".parse().unwrap())
        );
        assert_eq!(drive(b"PROXY UNKNOWN\r\n").unwrap(), (15, None));
    }

    #[test]
    fn hostile_headers_are_refused() {
        // Wrong signature: an agent's own first bytes, or an almost-v2.
        assert_eq!(next(b"\x00\x00\x00\x10hello"), Err(ProxyError::Signature));
        let mut almost = v2_tcp4([1, 2, 3, 4], 1);
        almost[11] = b'X';
        assert_eq!(drive(&almost), Err(ProxyError::Signature));
        assert_eq!(next(b"proxy tcp4 "), Err(ProxyError::Signature));
        // Oversize: refused from the length field, before reading it.
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(next(&big), Err(ProxyError::Oversize(16 + 0xffff)));
        // A v1 line that never ends is cut at 107 bytes.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert_eq!(drive(&long), Err(ProxyError::LineTooLong));
        // Truncated: an address block shorter than its family needs.
        let short = v2_header(1, 0x11, &[1, 2, 3, 4, 5, 6]);
        assert!(matches!(drive(&short), Err(ProxyError::Malformed(_))));
        let short6 = v2_header(1, 0x21, &[0; 20]);
        assert!(matches!(drive(&short6), Err(ProxyError::Malformed(_))));
        // Other versions, commands and families.
        let mut v3 = v2_tcp4([1, 2, 3, 4], 1);
        v3[12] = 0x31;
        assert!(matches!(drive(&v3), Err(ProxyError::Malformed(_))));
        let mut cmd = v2_tcp4([1, 2, 3, 4], 1);
        cmd[12] = 0x22;
        assert!(matches!(drive(&cmd), Err(ProxyError::Malformed(_))));
        let udp = v2_header(1, 0x12, &[0; 12]);
        assert!(matches!(drive(&udp), Err(ProxyError::Malformed(_))));
        // v1 with bad fields.
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(drive(bad), Err(ProxyError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn read_stops_at_the_header_and_a_truncated_one_is_an_error() {
        let mut h = v2_tcp4([198, 51, 100, 1], 4000);
        h.extend_from_slice(b"rest");
        let mut r = &h[..];
        assert_eq!(
            read(&mut r).await.unwrap(),
            Some("198.51.100.1:4000".parse().unwrap())
        );
        assert_eq!(r, b"rest");
        let cut = v2_tcp4([198, 51, 100, 1], 4000);
        let mut r = &cut[..20];
        assert!(matches!(read(&mut r).await, Err(ReadError::Io(_))));
    }
}
