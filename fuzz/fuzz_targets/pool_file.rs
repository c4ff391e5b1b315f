//! The fallback pool file: never a panic, at most one ticket per line, and whitespace
//! around lines, CRLF line ends and repeated lines do not change the pool.
#![no_main]

use libfuzzer_sys::fuzz_target;
use realtime_service::fuzzing::pool_file;

fuzz_target!(|contents: &[u8]| {
    let tickets = pool_file(contents);
    let lines: Vec<&[u8]> = contents.split(|b| *b == b'\n').collect();
    assert!(tickets <= lines.len());

    let padded: Vec<u8> = lines
        .iter()
        .flat_map(|line| [&b" \t"[..], line, b" \r\n"].concat())
        .collect();
    assert_eq!(pool_file(&padded), tickets);

    let twice = [contents, b"\n", contents].concat();
    assert_eq!(pool_file(&twice), tickets);
});
