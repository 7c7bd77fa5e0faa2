//! The flow-rule wire codec a guest fills into a control request's payload (FLOW_VALIDATE /
//! FLOW_CREATE): `decode` must never panic, must be strict (what it accepts re-encodes to the
//! very same bytes and decodes to the same rule), and what it yields must be safe to
//! shape-check and to match frames with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdpdk_core::abi::flow_codec;

fuzz_target!(|data: &[u8]| {
    let Ok(rule) = flow_codec::decode(data) else {
        return;
    };
    let bytes = flow_codec::encode(&rule);
    let again = flow_codec::decode(&bytes).expect("an encoded rule decodes");
    assert_eq!(again, rule, "decode(encode(rule)) != rule");
    // The decoder accepts exactly one rule filling the buffer, every field fixed-size: the
    // encoding of what it accepted is the input itself.
    assert_eq!(bytes, data, "encode(decode(bytes)) != bytes");
    let _ = rule.check_shape();
    let _ = rule.verdict();
    let _ = rule.queues().count();
    let _ = rule.eth();
    // The matcher parses frames (host-mux runs it on every frame steered to a guest); any
    // bytes are a frame to it. The input and its tail are two arbitrary ones.
    let _ = rule.matches(data);
    let _ = rule.matches(&data[data.len().min(12)..]);
});
