//! The JSON Admin API's request decoding (`POST /api/v1/admin/{Method}`
//! bodies, from the network) for every Admin method: errors are fine,
//! panics are not, and what decodes re-decodes as the typed request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost_reflect::DescriptorPool;
use std::sync::LazyLock;
use switchyard_broker::api::gateway::decode_json;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(switchyard_proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
});

fuzz_target!(|data: &[u8]| {
    let Some(admin) = POOL.get_service_by_name("switchyard.v1.Admin") else {
        return;
    };
    // The first byte picks the method, the rest is the body.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let methods: Vec<_> = admin.methods().collect();
    let method = &methods[usize::from(pick) % methods.len()];
    if let Ok(encoded) = decode_json(method.input(), body) {
        prost_reflect::DynamicMessage::decode(method.input(), encoded.as_slice())
            .expect("what the gateway encodes decodes");
    }
});
