//! The streaming multipart parser on arbitrary bytes, pushed in arbitrary pieces:
//! it must never panic or loop, and feeding the same bytes whole or in pieces
//! must give the same fields.
#![no_main]

use idb_wire::{MultipartEvent, MultipartParser};
use libfuzzer_sys::fuzz_target;

/// Parses `body` pushed in pieces of `step` bytes; the events with data merged.
fn parse(body: &[u8], step: usize) -> Result<Vec<(String, Vec<u8>)>, ()> {
    let mut parser = MultipartParser::new("b0undary");
    let mut fields = Vec::new();
    let mut pieces = body.chunks(step.max(1));
    loop {
        loop {
            match parser.next_event() {
                Ok(Some(MultipartEvent::PartStart(h))) => fields.push((h.name, Vec::new())),
                Ok(Some(MultipartEvent::Data(d))) => fields.last_mut().ok_or(())?.1.extend_from_slice(&d),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return Err(()),
            }
        }
        match pieces.next() {
            Some(piece) => parser.push(piece),
            None => break,
        }
    }
    parser.finish().map_err(|_| ())?;
    Ok(fields)
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, body) = input;
    let whole = parse(body, body.len());
    let pieces = parse(body, step as usize);
    assert_eq!(whole, pieces);
});
