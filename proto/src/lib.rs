//! The `switchyard.v1` gRPC API: messages and client/server stubs generated
//! from `proto/switchyard/v1/*.proto` at build time (with protox, so no
//! `protoc` is needed). Any gRPC client generated from the same files talks
//! to a Switchyard broker.

#![allow(missing_docs, unreachable_pub, clippy::all)]

pub mod codec;

/// Version 1 of the Switchyard API.
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// The encoded `FileDescriptorSet` of every `switchyard.v1` file (and its
/// imports), for reflection: e.g. mapping the API to JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

/// Names of the CloudEvents 1.0 core attributes (and of the JSON format's
/// data members): they can never be extension attributes.
pub const CORE_ATTRIBUTES: [&str; 10] = [
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];
