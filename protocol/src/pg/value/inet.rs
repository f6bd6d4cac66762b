//! `inet` and `cidr` as PostgreSQL 15's `network_out` prints them, through its own copy of
//! BIND's `inet_net_ntop`: `192.168.0.1`, `10.0.0.0/8`, `2001:db8::1`, `::ffff:1.2.3.4`.

use std::fmt::Write as _;

/// PostgreSQL's own address family numbers on the wire (`PGSQL_AF_INET` and
/// `PGSQL_AF_INET6`), not the platform's `AF_INET`/`AF_INET6`.
const FAMILY_V4: u8 = 2;
const FAMILY_V6: u8 = 3;

/// A binary inet or cidr: family, mask length, an is-cidr byte (which `inet_recv` ignores:
/// the type comes from the OID), address length, address. `cidr` values with bits set past
/// the mask are ones the server refuses.
pub(super) fn inet(v: &[u8], is_cidr: bool) -> Option<String> {
    let [family, bits, _, len, addr @ ..] = v else {
        return None;
    };
    let max_bits: u8 = match *family {
        FAMILY_V4 => 32,
        FAMILY_V6 => 128,
        _ => return None,
    };
    if *bits > max_bits
        || usize::from(*len) != usize::from(max_bits / 8)
        || addr.len() != usize::from(*len)
    {
        return None;
    }
    if is_cidr && !host_bits_clear(addr, *bits) {
        return None;
    }
    let mut s = if *family == FAMILY_V4 {
        let mut s = String::with_capacity(18);
        for (i, byte) in addr.iter().enumerate() {
            let dot = if i == 0 { "" } else { "." };
            let _ = write!(s, "{dot}{byte}");
        }
        s
    } else {
        let words: [u16; 8] = std::array::from_fn(|i| {
            let hi = addr.get(2 * i).copied().unwrap_or(0);
            let lo = addr.get(2 * i + 1).copied().unwrap_or(0);
            u16::from_be_bytes([hi, lo])
        });
        ipv6(&words, addr)
    };
    // `inet` leaves out a full-length mask; `cidr` always shows it.
    if is_cidr || *bits != max_bits {
        let _ = write!(s, "/{bits}");
    }
    Some(s)
}

/// Whether every address bit after the first `bits` is zero.
fn host_bits_clear(addr: &[u8], bits: u8) -> bool {
    addr.iter().enumerate().all(|(i, byte)| {
        let first = i.saturating_mul(8);
        // How many of this byte's bits are network bits; the rest must be zero.
        let keep = usize::from(bits).saturating_sub(first);
        let host_mask = if keep >= 8 { 0 } else { 0xffu8 >> keep };
        byte & host_mask == 0
    })
}

/// The address as `inet_net_ntop_ipv6` writes it: lowercase hex words without leading
/// zeros, the longest run of two or more zero words (the first, on a tie) as `::`, and the
/// last four bytes as a dotted quad after six zero words or `::ffff:`.
fn ipv6(words: &[u16; 8], addr: &[u8]) -> String {
    // A nonzero word after the last closes a trailing run; a later run must be strictly
    // longer to replace an earlier one.
    let mut best = (0, 0);
    let mut run_start = None;
    for (i, word) in words.iter().chain([&1]).enumerate() {
        match (*word, run_start) {
            (0, None) => run_start = Some(i),
            (0, Some(_)) => {}
            (_, Some(base)) => {
                if i - base > best.1 {
                    best = (base, i - base);
                }
                run_start = None;
            }
            (_, None) => {}
        }
    }
    let best = (best.1 >= 2).then_some(best);
    let mut s = String::with_capacity(40);
    for (i, word) in words.iter().enumerate() {
        if let Some((base, len)) = best
            && (base..base + len).contains(&i)
        {
            if i == base {
                s.push(':');
            }
            continue;
        }
        if i != 0 {
            s.push(':');
        }
        // An IPv4 address carried in IPv6. PostgreSQL's test also accepts a run of seven
        // zero words, which can never reach word 6, so it is left out here.
        let embedded = matches!(best, Some((0, 6)))
            || (matches!(best, Some((0, 5))) && words.get(5) == Some(&0xffff));
        if i == 6 && embedded {
            let quad = addr.get(12..16).unwrap_or_default();
            for (j, byte) in quad.iter().enumerate() {
                let dot = if j == 0 { "" } else { "." };
                let _ = write!(s, "{dot}{byte}");
            }
            break;
        }
        let _ = write!(s, "{word:x}");
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        s.push(':');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;

    /// Each row's bytes are `inet_send`/`cidr_send` of the value in its comment, and its text
    /// what PostgreSQL 15.18's output function printed for it (not the `::text` cast, which
    /// always adds the mask length); rows marked binary COPY were fed to the server as those
    /// bytes, and it printed the text or refused them as the comment says.
    #[test]
    fn renders_inet_and_cidr_as_postgres_15_prints_them() {
        check(&[
            // '192.168.0.1'::inet
            (869, "02200004c0a80001", Some("192.168.0.1")),
            // '10.0.0.0/8'::inet
            (869, "020800040a000000", Some("10.0.0.0/8")),
            // '10.1.2.3/8'::inet
            (869, "020800040a010203", Some("10.1.2.3/8")),
            // '0.0.0.0/0'::inet
            (869, "0200000400000000", Some("0.0.0.0/0")),
            // '255.255.255.255/31'::inet
            (869, "021f0004ffffffff", Some("255.255.255.255/31")),
            // '::1'::inet
            (869, "0380001000000000000000000000000000000001", Some("::1")),
            // '2001:db8::1'::inet
            (
                869,
                "0380001020010db8000000000000000000000001",
                Some("2001:db8::1"),
            ),
            // '::ffff:1.2.3.4'::inet
            (
                869,
                "0380001000000000000000000000ffff01020304",
                Some("::ffff:1.2.3.4"),
            ),
            // 'fe80::1/64'::inet
            (
                869,
                "03400010fe800000000000000000000000000001",
                Some("fe80::1/64"),
            ),
            // '::'::inet
            (869, "0380001000000000000000000000000000000000", Some("::")),
            // '::/0'::inet
            (
                869,
                "0300001000000000000000000000000000000000",
                Some("::/0"),
            ),
            // '1:0:0:1:0:0:0:1'::inet
            (
                869,
                "0380001000010000000000010000000000000001",
                Some("1:0:0:1::1"),
            ),
            // '1::'::inet
            (869, "0380001000010000000000000000000000000000", Some("1::")),
            // '::1.2.3.4'::inet
            (
                869,
                "0380001000000000000000000000000001020304",
                Some("::1.2.3.4"),
            ),
            // '::2'::inet
            (869, "0380001000000000000000000000000000000002", Some("::2")),
            // '2001:db8:0:0:1:0:0:1'::inet
            (
                869,
                "0380001020010db8000000000001000000000001",
                Some("2001:db8::1:0:0:1"),
            ),
            // 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/127'::inet
            (
                869,
                "037f0010ffffffffffffffffffffffffffffffff",
                Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/127"),
            ),
            // '1:0:1:0:1:0:1:0'::inet
            (
                869,
                "0380001000010000000100000001000000010000",
                Some("1:0:1:0:1:0:1:0"),
            ),
            // '::ffff:0:0'::inet
            (
                869,
                "0380001000000000000000000000ffff00000000",
                Some("::ffff:0.0.0.0"),
            ),
            // '0:0:0:0:0:1:0:0'::inet
            (
                869,
                "0380001000000000000000000000000100000000",
                Some("::1:0:0"),
            ),
            // '1:2:3:4:5:6:7:8/128'::inet
            (
                869,
                "0380001000010002000300040005000600070008",
                Some("1:2:3:4:5:6:7:8"),
            ),
            // 'abcd:ef01::/16'::inet
            (
                869,
                "03100010abcdef01000000000000000000000000",
                Some("abcd:ef01::/16"),
            ),
            // '10.0.0.0/8'::cidr
            (650, "020801040a000000", Some("10.0.0.0/8")),
            // '192.168.1.1/32'::cidr
            (650, "02200104c0a80101", Some("192.168.1.1/32")),
            // '0.0.0.0/0'::cidr
            (650, "0200010400000000", Some("0.0.0.0/0")),
            // '2001:db8::/32'::cidr
            (
                650,
                "0320011020010db8000000000000000000000000",
                Some("2001:db8::/32"),
            ),
            // '::1/128'::cidr
            (
                650,
                "0380011000000000000000000000000000000001",
                Some("::1/128"),
            ),
            // '::ffff:1.2.3.0/120'::cidr
            (
                650,
                "0378011000000000000000000000ffff01020300",
                Some("::ffff:1.2.3.0/120"),
            ),
            // '10.1.2.0/23'::cidr
            (650, "021701040a010200", Some("10.1.2.0/23")),
            // accepted (binary COPY)
            (869, "021801040a010203", Some("10.1.2.3/24")),
            // refused: invalid length in external "inet" value
            (869, "0220001000000000000000000000000000000000", None),
            // refused: invalid bits in external "inet" value
            (869, "0221000401020304", None),
            // refused: invalid address family in external "inet" value
            (869, "0420000401020304", None),
            // refused: incorrect binary data format
            (869, "022000040102030405", None),
            // refused: invalid bits in external "inet" value
            (869, "0381001000000000000000000000000000000000", None),
            // refused: invalid external "cidr" value
            (650, "021801040a010203", None),
            // accepted (binary COPY)
            (650, "021800040a010200", Some("10.1.2.0/24")),
            // accepted (binary COPY)
            (
                650,
                "0300011000000000000000000000000000000000",
                Some("::/0"),
            ),
            // refused: invalid external "cidr" value
            (650, "037f011000000000000000000000000000000001", None),
        ]);
    }
}
