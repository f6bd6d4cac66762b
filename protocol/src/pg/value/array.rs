//! Arrays as PostgreSQL 15's `array_out` prints them: `{1,NULL,3}`, `{{1,2},{3,4}}`, `{}`,
//! `[0:1]={1,2}`, `{"a b","\\x0102"}`, each element as its own type prints it.
//!
//! The header is untrusted: its dimension count, lengths and element count are checked as
//! `array_recv` checks them, and against the bytes actually present, before anything is
//! walked or allocated, and the elements' framing is checked to end exactly at the end.

use std::fmt::Write as _;

use super::{binary_as_text, oid};

/// Roughly the most text an array renders to before it is cut (see
/// [`binary_as_text`](super::binary_as_text)): enough for any log line, while a large or
/// hostile array (a numeric element of 12 bytes can print as a thousand digits) cannot make
/// the gateway build text many times the size of the message.
pub const MAX_ARRAY_TEXT: usize = 64 * 1024;

/// PostgreSQL's `MAXDIM`.
const MAX_DIMS: usize = 6;
/// PostgreSQL's `MaxArraySize`: the most elements an array may have.
const MAX_ITEMS: i32 = 0x7FF_FFFF;
/// PostgreSQL's `FirstGenbkiObjectId`: below it, type OIDs are built in and fixed, and
/// `array_recv` refuses an element type that is not the array's; above it, it ignores the
/// one sent and uses the array's own, so this does too.
const FIRST_UNFIXED_OID: u32 = 10_000;

/// The element type of an array type rendered here.
pub(super) fn element_type(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        oid::BOOL_ARRAY => oid::BOOL,
        oid::BYTEA_ARRAY => oid::BYTEA,
        oid::CHAR_ARRAY => oid::CHAR,
        oid::NAME_ARRAY => oid::NAME,
        oid::INT2_ARRAY => oid::INT2,
        oid::INT4_ARRAY => oid::INT4,
        oid::TEXT_ARRAY => oid::TEXT,
        oid::BPCHAR_ARRAY => oid::BPCHAR,
        oid::VARCHAR_ARRAY => oid::VARCHAR,
        oid::INT8_ARRAY => oid::INT8,
        oid::FLOAT4_ARRAY => oid::FLOAT4,
        oid::FLOAT8_ARRAY => oid::FLOAT8,
        oid::OID_ARRAY => oid::OID,
        oid::TIMESTAMP_ARRAY => oid::TIMESTAMP,
        oid::DATE_ARRAY => oid::DATE,
        oid::TIME_ARRAY => oid::TIME,
        oid::TIMESTAMPTZ_ARRAY => oid::TIMESTAMPTZ,
        oid::INTERVAL_ARRAY => oid::INTERVAL,
        oid::NUMERIC_ARRAY => oid::NUMERIC,
        oid::TIMETZ_ARRAY => oid::TIMETZ,
        oid::UUID_ARRAY => oid::UUID,
        oid::JSON_ARRAY => oid::JSON,
        oid::JSONB_ARRAY => oid::JSONB,
        oid::INET_ARRAY => oid::INET,
        oid::CIDR_ARRAY => oid::CIDR,
        _ => return None,
    })
}

fn take_i32(v: &mut &[u8]) -> Option<i32> {
    let (word, rest) = v.split_first_chunk::<4>()?;
    *v = rest;
    Some(i32::from_be_bytes(*word))
}

/// The next element: `None` inside for SQL NULL, `None` outside when the framing is bad.
fn take_element<'a>(v: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = take_i32(v)?;
    if len == -1 {
        return Some(None);
    }
    let (item, rest) = v.split_at_checked(usize::try_from(len).ok()?)?;
    *v = rest;
    Some(Some(item))
}

/// A binary array of `element` values: dimension count, has-nulls flag, element type, a
/// length and lower bound per dimension, then each element as a length (-1 for NULL) and
/// its binary value.
pub(super) fn array(element: u32, v: &[u8]) -> Option<String> {
    let mut rest = v;
    let ndim = usize::try_from(take_i32(&mut rest)?).ok()?;
    let flags = take_i32(&mut rest)?;
    let sent = take_i32(&mut rest)?.cast_unsigned();
    if ndim > MAX_DIMS || !matches!(flags, 0 | 1) || (sent != element && sent < FIRST_UNFIXED_OID) {
        return None;
    }
    let mut dims = [(0i32, 0i32); MAX_DIMS];
    for slot in dims.iter_mut().take(ndim) {
        *slot = (take_i32(&mut rest)?, take_i32(&mut rest)?);
    }
    let dims = dims.get(..ndim)?;
    // As `ArrayGetNItems` and `ArrayCheckBounds` count: no negative lengths, a product that
    // fits (each partial product too) and is at most `MaxArraySize`, and upper bounds that
    // fit an int4.
    let mut items: i32 = if ndim == 0 { 0 } else { 1 };
    for &(len, lower) in dims {
        if len < 0 {
            return None;
        }
        items = items.checked_mul(len)?;
        lower.checked_add(len)?;
    }
    if items > MAX_ITEMS {
        return None;
    }
    let items = usize::try_from(items).ok()?;
    // An empty array loses its bounds, as `array_recv` drops them.
    if items == 0 {
        return rest.is_empty().then(|| "{}".into());
    }
    // Each element takes at least its four-byte length, so a count the bytes cannot hold
    // is refused before it is walked.
    if items > rest.len() / 4 {
        return None;
    }
    let mut framing = rest;
    for _ in 0..items {
        take_element(&mut framing)?;
    }
    if !framing.is_empty() {
        return None;
    }

    let mut out = Out::default();
    if dims.iter().any(|&(_, lower)| lower != 1) {
        for &(len, lower) in dims {
            let upper = i64::from(lower) + i64::from(len) - 1;
            out.push(&format!("[{lower}:{upper}]"));
        }
        out.push("=");
    }
    out.push(&"{".repeat(ndim));
    let mut index = [0i32; MAX_DIMS];
    for k in 0..items {
        if k > 0 {
            // Step the index like an odometer; every dimension that wraps closes a brace
            // and opens another.
            let mut wrapped = 0;
            for (i, &(len, _)) in dims.iter().enumerate().rev() {
                let at = index.get_mut(i)?;
                *at += 1;
                if *at < len {
                    break;
                }
                *at = 0;
                wrapped += 1;
            }
            out.push(&"}".repeat(wrapped));
            out.push(",");
            out.push(&"{".repeat(wrapped));
        }
        match take_element(&mut rest)? {
            None => out.push("NULL"),
            Some(item) => push_element(&mut out, element, item)?,
        }
        if out.full {
            return Some(out.s);
        }
    }
    out.push(&"}".repeat(ndim));
    Some(out.s)
}

/// One element's text, quoted when `array_out` would quote it.
fn push_element(out: &mut Out, element: u32, v: &[u8]) -> Option<()> {
    match element {
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON => {
            out.push_quoted(text(v)?);
        }
        oid::JSONB => match v.split_first() {
            Some((1, json)) => out.push_quoted(text(json)?),
            _ => return None,
        },
        // `boolout`, not the `true`/`false` of a cast to text.
        oid::BOOL => match v {
            [0] => out.push("f"),
            [_] => out.push("t"),
            _ => return None,
        },
        // `\x` and hex, which always holds a backslash, so always quoted and escaped. Written
        // a byte at a time so that a large value stops at the cut.
        oid::BYTEA => {
            out.push("\"\\\\x");
            let mut hex = String::with_capacity(2);
            for byte in v {
                hex.clear();
                let _ = write!(hex, "{byte:02x}");
                out.push(&hex);
                if out.full {
                    return Some(());
                }
            }
            out.push("\"");
        }
        // The rest print in bounded space.
        _ => out.push_quoted(&binary_as_text(element, v)?),
    }
    Some(())
}

/// A text element's bytes: UTF-8 without NUL, as the server accepts text.
fn text(v: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(v).ok()?;
    (!s.contains('\0')).then_some(s)
}

/// The array's text so far, stopping at [`MAX_ARRAY_TEXT`].
#[derive(Debug, Default)]
struct Out {
    s: String,
    full: bool,
}

impl Out {
    fn push(&mut self, t: &str) {
        if self.full {
            return;
        }
        let room = MAX_ARRAY_TEXT.saturating_sub(self.s.len());
        if t.len() <= room {
            self.s.push_str(t);
            return;
        }
        // Cut on a character boundary, at most three bytes back.
        let mut cut = room;
        while !t.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        self.s.push_str(t.get(..cut).unwrap_or_default());
        self.full = true;
    }

    /// `t` as `array_out` writes an element: in double quotes, with `"` and `\` escaped by a
    /// backslash, when it is empty, reads as NULL, or holds a brace, comma, quote,
    /// backslash or any of the white space `array_isspace` knows; bare otherwise.
    fn push_quoted(&mut self, t: &str) {
        let special = |c: char| matches!(c, '"' | '\\');
        let quote = t.is_empty()
            || t.eq_ignore_ascii_case("NULL")
            || t.contains(|c: char| {
                special(c)
                    || matches!(
                        c,
                        '{' | '}' | ',' | ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'
                    )
            });
        if !quote {
            self.push(t);
            return;
        }
        self.push("\"");
        let mut rest = t;
        // Each `at` is the offset of a one-byte character, so both splits are on boundaries.
        while let Some((plain, tail)) = rest.find(special).and_then(|at| rest.split_at_checked(at))
        {
            let Some((c, tail)) = tail.split_at_checked(1) else {
                break;
            };
            self.push(plain);
            self.push("\\");
            self.push(c);
            rest = tail;
        }
        self.push(rest);
        self.push("\"");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;
    use super::*;

    /// An array's bytes from its parts, as `array_send` lays them out.
    fn encode(
        ndim: i32,
        flags: i32,
        element: u32,
        dims: &[(i32, i32)],
        items: &[Option<Vec<u8>>],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ndim.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&element.to_be_bytes());
        for (len, lower) in dims {
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&lower.to_be_bytes());
        }
        for item in items {
            match item {
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(b) => {
                    v.extend_from_slice(&i32::try_from(b.len()).expect("small").to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    /// Large arrays, and arrays whose elements print far longer than they are sent, stop
    /// at the cap instead of building all their text.
    #[test]
    fn large_arrays_are_cut_at_the_cap() {
        // 100,000 numerics of 12 bytes, each printing as `0.` and 1,000 zeros.
        let zero = [0u16, 0, 0, 1000]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect::<Vec<u8>>();
        let items = vec![Some(zero); 100_000];
        let v = encode(1, 0, oid::NUMERIC, &[(100_000, 1)], &items);
        let s = binary_as_text(oid::NUMERIC_ARRAY, &v).expect("rendered");
        assert!(
            s.len() <= MAX_ARRAY_TEXT && s.len() > MAX_ARRAY_TEXT - 2000,
            "{}",
            s.len()
        );
        assert!(s.starts_with("{0.000"));

        // One bytea of 1 MiB, and one text of 1 MiB of quotes: each cut inside itself.
        for (array, element, byte) in [
            (oid::BYTEA_ARRAY, oid::BYTEA, 0xab),
            (oid::TEXT_ARRAY, oid::TEXT, b'"'),
        ] {
            let v = encode(1, 0, element, &[(1, 1)], &[Some(vec![byte; 1 << 20])]);
            let s = binary_as_text(array, &v).expect("rendered");
            assert_eq!(s.len(), MAX_ARRAY_TEXT);
        }

        // A cut never splits a character: the two-byte `é`s fall across the cap.
        let v = encode(
            1,
            0,
            oid::TEXT,
            &[(1, 1)],
            &[Some("é ".repeat(1 << 16).into_bytes())],
        );
        let s = binary_as_text(oid::TEXT_ARRAY, &v).expect("rendered");
        assert!(s.len() <= MAX_ARRAY_TEXT && s.len() >= MAX_ARRAY_TEXT - 3);
    }

    /// Headers that claim more than they hold are refused without being believed.
    #[test]
    fn hostile_headers_are_refused() {
        // Six dimensions of 2^31-1 items each would overflow any count.
        let v = encode(6, 0, oid::INT4, &[(i32::MAX, 1); 6], &[]);
        assert_eq!(binary_as_text(oid::INT4_ARRAY, &v), None);
        // The most items PostgreSQL allows, with no bytes for them.
        let v = encode(1, 0, oid::INT4, &[(MAX_ITEMS, 1)], &[]);
        assert_eq!(binary_as_text(oid::INT4_ARRAY, &v), None);
        // One more than the bytes present, and one fewer.
        let items = vec![Some(vec![0, 0, 0, 1]); 3];
        for n in [2, 4] {
            let v = encode(1, 0, oid::INT4, &[(n, 1)], &items);
            assert_eq!(binary_as_text(oid::INT4_ARRAY, &v), None);
        }
        let v = encode(1, 0, oid::INT4, &[(3, 1)], &items);
        assert_eq!(
            binary_as_text(oid::INT4_ARRAY, &v).as_deref(),
            Some("{1,1,1}")
        );
        // Every truncation of a good array is refused.
        let v = encode(
            2,
            1,
            oid::TEXT,
            &[(2, 0), (1, 1)],
            &[Some(b"a".to_vec()), None],
        );
        assert_eq!(
            binary_as_text(oid::TEXT_ARRAY, &v).as_deref(),
            Some("[0:1][1:1]={{a},{NULL}}")
        );
        for cut in 0..v.len() {
            assert_eq!(
                binary_as_text(oid::TEXT_ARRAY, v.get(..cut).expect("shorter")),
                None
            );
        }
    }

    proptest::proptest! {
        /// Headers that nearly make sense, with any elements, never panic.
        #[test]
        fn arbitrary_arrays_never_panic(
            array in proptest::sample::select(vec![
                oid::INT4_ARRAY, oid::TEXT_ARRAY, oid::BOOL_ARRAY, oid::BYTEA_ARRAY,
                oid::CHAR_ARRAY, oid::INTERVAL_ARRAY, oid::INET_ARRAY, oid::CIDR_ARRAY,
                oid::TIMETZ_ARRAY, oid::NUMERIC_ARRAY, oid::JSONB_ARRAY, oid::FLOAT8_ARRAY,
            ]),
            ndim in -1i32..8,
            flags in -1i32..3,
            element in proptest::sample::select(vec![16u32, 17, 18, 23, 25, 650, 701, 869, 1186, 1266, 1700, 3802, 20_000]),
            dims in proptest::collection::vec((-1i32..4, proptest::prelude::any::<i32>()), 0..8),
            items in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)),
                0..12,
            ),
        ) {
            let v = encode(ndim, flags, element, &dims, &items);
            let _ = binary_as_text(array, &v);
        }
    }

    /// Each row's bytes are `array_send` of the value in its comment, and its text what
    /// PostgreSQL 15.18 printed for it (`DateStyle` ISO, `TimeZone` UTC); rows marked binary
    /// COPY were fed to the server as those bytes, and it printed the text or refused them as
    /// the comment says.
    #[test]
    fn renders_arrays_as_postgres_15_prints_them() {
        check(&[
            // '{1,NULL,3}'::int4[]
            (
                1007,
                "00000001000000010000001700000003000000010000000400000001ffffffff0000000400000003",
                Some("{1,NULL,3}"),
            ),
            // '{}'::int4[]
            (1007, "000000000000000000000017", Some("{}")),
            // '{{1,2},{3,4}}'::int4[]
            (
                1007,
                "000000020000000000000017000000020000000100000002000000010000000400000001000000040000000200000004000000030000000400000004",
                Some("{{1,2},{3,4}}"),
            ),
            // '[0:1]={1,2}'::int4[]
            (
                1007,
                "000000010000000000000017000000020000000000000004000000010000000400000002",
                Some("[0:1]={1,2}"),
            ),
            // '[-5:-4][1:2]={{1,2},{3,4}}'::int4[]
            (
                1007,
                "00000002000000000000001700000002fffffffb00000002000000010000000400000001000000040000000200000004000000030000000400000004",
                Some("[-5:-4][1:2]={{1,2},{3,4}}"),
            ),
            // '{{{1,2,3}},{{4,5,6}}}'::int4[]
            (
                1007,
                "000000030000000000000017000000020000000100000001000000010000000300000001000000040000000100000004000000020000000400000003000000040000000400000004000000050000000400000006",
                Some("{{{1,2,3}},{{4,5,6}}}"),
            ),
            // '[1:1][3:4]={{NULL,7}}'::int4[]
            (
                1007,
                "00000002000000010000001700000001000000010000000200000003ffffffff0000000400000007",
                Some("[1:1][3:4]={{NULL,7}}"),
            ),
            // '{1,-2}'::int2[]
            (
                1005,
                "000000010000000000000015000000020000000100000002000100000002fffe",
                Some("{1,-2}"),
            ),
            // '{9223372036854775807,-1}'::int8[]
            (
                1016,
                "0000000100000000000000140000000200000001000000087fffffffffffffff00000008ffffffffffffffff",
                Some("{9223372036854775807,-1}"),
            ),
            // '{0,4294967295}'::oid[]
            (
                1028,
                "00000001000000000000001a0000000200000001000000040000000000000004ffffffff",
                Some("{0,4294967295}"),
            ),
            // array['a b',NULL,'NULL','null','','x"y','a\b','{}',',','é',E'\t',E'x\ny','nullx',' ', E'\r', E'\f', chr(11)]::text[]
            (
                1009,
                "000000010000000100000019000000110000000100000003612062ffffffff000000044e554c4c000000046e756c6c000000000000000378227900000003615c62000000027b7d000000012c00000002c3a9000000010900000003780a79000000056e756c6c780000000120000000010d000000010c000000010b",
                Some(
                    "{\"a b\",NULL,\"NULL\",\"null\",\"\",\"x\\\"y\",\"a\\\\b\",\"{}\",\",\",é,\"\t\",\"x\ny\",nullx,\" \",\"\r\",\"\u{c}\",\"\u{b}\"}",
                ),
            ),
            // '{"{a}",b}'::text[]
            (
                1009,
                "0000000100000000000000190000000200000001000000037b617d0000000162",
                Some("{\"{a}\",b}"),
            ),
            // '{t,f,NULL}'::bool[]
            (
                1000,
                "000000010000000100000010000000030000000100000001010000000100ffffffff",
                Some("{t,f,NULL}"),
            ),
            // array['\x0102'::bytea,'',NULL]
            (
                1001,
                "000000010000000100000011000000030000000100000002010200000000ffffffff",
                Some("{\"\\\\x0102\",\"\\\\x\",NULL}"),
            ),
            // array['a'::"char",'\200','',',']
            (
                1002,
                "0000000100000000000000120000000400000001000000016100000001800000000100000000012c",
                Some("{a,\"\\\\200\",\"\",\",\"}"),
            ),
            // array['foo'::name,'a b']
            (
                1003,
                "000000010000000000000013000000020000000100000003666f6f00000003612062",
                Some("{foo,\"a b\"}"),
            ),
            // array['ab'::char(3),'x']
            (
                1014,
                "0000000100000000000004120000000200000001000000036162200000000178",
                Some("{\"ab \",x}"),
            ),
            // array['ab'::varchar,'c,d']
            (
                1015,
                "000000010000000000000413000000020000000100000002616200000003632c64",
                Some("{ab,\"c,d\"}"),
            ),
            // '{1.5,NaN,-Infinity,0.1,1e+06}'::float4[]
            (
                1021,
                "0000000100000000000002bc0000000500000001000000043fc00000000000047fc0000000000004ff800000000000043dcccccd0000000449742400",
                Some("{1.5,NaN,-Infinity,0.1,1e+06}"),
            ),
            // '{0.30000000000000004,1e+300,-0}'::float8[]
            (
                1022,
                "0000000100000000000002bd0000000300000001000000083fd3333333333334000000087e37e43c8800759c000000088000000000000000",
                Some("{0.30000000000000004,1e+300,-0}"),
            ),
            // '{"2020-01-01 10:00:00.5",infinity}'::timestamp[]
            (
                1115,
                "00000001000000000000045a00000002000000010000000800023e0fe88e6920000000087fffffffffffffff",
                Some("{\"2020-01-01 10:00:00.5\",infinity}"),
            ),
            // '{"2020-01-01 10:00:00+00",-infinity}'::timestamptz[]
            (
                1185,
                "0000000100000000000004a000000002000000010000000800023e0fe886c800000000088000000000000000",
                Some("{\"2020-01-01 10:00:00+00\",-infinity}"),
            ),
            // '{2020-01-01,0001-12-31 BC,infinity}'::date[]
            (
                1182,
                "00000001000000000000043a00000003000000010000000400001c8900000004fff4dbf8000000047fffffff",
                Some("{2020-01-01,\"0001-12-31 BC\",infinity}"),
            ),
            // '{10:00:00,24:00:00}'::time[]
            (
                1183,
                "00000001000000000000043b0000000200000001000000080000000861c4680000000008000000141dd76000",
                Some("{10:00:00,24:00:00}"),
            ),
            // '{"1 day 02:00:00",00:00:00,"-1 days +00:00:01"}'::interval[]
            (
                1187,
                "0000000100000000000004a200000003000000010000001000000001ad274800000000010000000000000010000000000000000000000000000000000000001000000000000f4240ffffffff00000000",
                Some("{\"1 day 02:00:00\",00:00:00,\"-1 days +00:00:01\"}"),
            ),
            // '{1.5,NaN,-0.001,100000}'::numeric[]
            (
                1231,
                "0000000100000000000006a400000004000000010000000c0002000000000001000113880000000800000000c00000000000000a0001ffff40000003000a0000000a0001000100000000000a",
                Some("{1.5,NaN,-0.001,100000}"),
            ),
            // '{13:14:15+00,13:14:15.5-05:30}'::timetz[]
            (
                1270,
                "0000000100000000000004f200000002000000010000000c0000000b187597c0000000000000000c0000000b187d38e000004d58",
                Some("{13:14:15+00,13:14:15.5-05:30}"),
            ),
            // '{550e8400-e29b-41d4-a716-446655440000,NULL}'::uuid[]
            (
                2951,
                "000000010000000100000b86000000020000000100000010550e8400e29b41d4a716446655440000ffffffff",
                Some("{550e8400-e29b-41d4-a716-446655440000,NULL}"),
            ),
            // array['{"a": 1}'::json,'[1,2]','"x"']
            (
                199,
                "0000000100000000000000720000000300000001000000087b2261223a20317d000000055b312c325d00000003227822",
                Some("{\"{\\\"a\\\": 1}\",\"[1,2]\",\"\\\"x\\\"\"}"),
            ),
            // array['{"a":1}'::jsonb,'null']
            (
                3807,
                "000000010000000000000eda000000020000000100000009017b2261223a20317d00000005016e756c6c",
                Some("{\"{\\\"a\\\": 1}\",\"null\"}"),
            ),
            // '{10.0.0.1,::1,10.0.0.0/8}'::inet[]
            (
                1041,
                "000000010000000000000365000000030000000100000008022000040a00000100000014038000100000000000000000000000000000000100000008020800040a000000",
                Some("{10.0.0.1,::1,10.0.0.0/8}"),
            ),
            // '{10.0.0.0/8,::/0}'::cidr[]
            (
                651,
                "00000001000000000000028a000000020000000100000008020801040a000000000000140300011000000000000000000000000000000000",
                Some("{10.0.0.0/8,::/0}"),
            ),
            // '{{a,b},{c,NULL}}'::text[]
            (
                1009,
                "00000002000000010000001900000002000000010000000200000001000000016100000001620000000163ffffffff",
                Some("{{a,b},{c,NULL}}"),
            ),
            // '{{a}}'::text[]
            (
                1009,
                "000000020000000000000019000000010000000100000001000000010000000161",
                Some("{{a}}"),
            ),
            // refused: number of array dimensions (7) exceeds the maximum allowed (6)
            (
                1007,
                "00000007000000000000001700000001000000010000000100000001000000010000000100000001000000010000000100000001000000010000000100000001000000010000000400000001",
                None,
            ),
            // refused: invalid array flags
            (
                1007,
                "00000001000000020000001700000001000000010000000400000001",
                None,
            ),
            // refused: binary data has array element type 20 (bigint) instead of expected 23 (integer)
            (
                1007,
                "00000001000000000000001400000001000000010000000400000001",
                None,
            ),
            // accepted (binary COPY)
            (
                1007,
                "000000010000000000004e2000000002000000010000000400000001ffffffff",
                Some("{1,NULL}"),
            ),
            // refused: array size exceeds the maximum allowed (134217727)
            (1007, "000000010000000000000017ffffffff00000001", None),
            // accepted (binary COPY)
            (1007, "0000000100000000000000170000000000000005", Some("{}")),
            // accepted (binary COPY)
            (1007, "000000000000000000000017", Some("{}")),
            // refused: incorrect binary data format
            (1007, "00000000000000000000001700", None),
            // accepted (binary COPY)
            (
                1007,
                "0000000100000000000000170000000100000001ffffffff",
                Some("{NULL}"),
            ),
            // refused: insufficient data left in message
            (
                1007,
                "000000010000000000000017000000010000000100000003000001",
                None,
            ),
            // refused: array lower bound is too large: 2147483647
            (
                1007,
                "000000010000000000000017000000017fffffff0000000400000001",
                None,
            ),
            // accepted (binary COPY)
            (
                1007,
                "000000010000000000000017000000017ffffffe0000000400000001",
                Some("[2147483646:2147483646]={1}"),
            ),
            // accepted (binary COPY)
            (
                1007,
                "00000001000000000000001700000001800000000000000400000001",
                Some("[-2147483648:-2147483648]={1}"),
            ),
            // refused: array lower bound is too large: 1
            (
                1007,
                "00000002000000000000001700000000000000017fffffff00000001",
                None,
            ),
            // refused: array size exceeds the maximum allowed (134217727)
            (
                1007,
                "000000030000000000000017000100000000000100010000000000010000000000000001",
                None,
            ),
            // refused: insufficient data left in message
            (
                1007,
                "00000001000000000000001700000002000000010000000400000001",
                None,
            ),
            // refused: incorrect binary data format
            (
                1007,
                "000000010000000000000017000000010000000100000004000000010000000400000002",
                None,
            ),
            // accepted (binary COPY)
            (
                1007,
                "0000000600000000000000170000000100000001000000010000000100000001000000010000000100000001000000010000000100000001000000010000000400000001",
                Some("{{{{{{1}}}}}}"),
            ),
            // refused: insufficient data left in message
            (
                1007,
                "0000000100000000000000170000000100000001fffffffe",
                None,
            ),
            // accepted (binary COPY)
            (
                1000,
                "00000001000000000000001000000001000000010000000102",
                Some("{t}"),
            ),
            // refused: invalid byte sequence for encoding "UTF8": 0x00
            (
                1009,
                "000000010000000000000019000000010000000100000003610062",
                None,
            ),
            // refused: invalid byte sequence for encoding "UTF8": 0xff
            (
                1009,
                "000000010000000000000019000000010000000100000001ff",
                None,
            ),
            // refused: no data left in message
            (
                1002,
                "000000010000000000000012000000010000000100000000",
                None,
            ),
            // accepted (binary COPY)
            (
                1002,
                "000000010000000000000012000000010000000100000001ff",
                Some("{\"\\\\377\"}"),
            ),
            // refused: unsupported jsonb version number 2
            (
                3807,
                "000000010000000000000eda000000010000000100000003027b7d",
                None,
            ),
            // accepted (binary COPY)
            (
                1001,
                "00000001000000000000001100000002000000010000000000000002dead",
                Some("{\"\\\\x\",\"\\\\xdead\"}"),
            ),
        ]);
    }
}
