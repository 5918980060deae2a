//! Protobuf schemas registered at run time, so patterns can match fields of
//! protobuf payloads and buses can refuse payloads that do not decode.
//!
//! `.proto` files come from the config (`schemas.files`, imports resolved
//! under `schemas.include`) and from Admin `RegisterSchema` (stored under
//! `<data dir>/schemas/` so they survive restarts). They are compiled with
//! protox (pure Rust) into one descriptor pool. An event names its message
//! by `dataschema` (a type URL such as `type.googleapis.com/shop.v1.Order`
//! or `/shop.v1.Order`: the part after the last `/`) or, failing that, by
//! its `type`.

use crate::model::{CloudEvent, EventData};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Why schemas could not be loaded or registered.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A `.proto` file does not compile.
    #[error("{0}")]
    Compile(String),
    /// The registered file could not be stored.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file name that cannot be stored safely.
    #[error("schema file name {0:?} must be a plain name ending in .proto, like \"shop.proto\"")]
    InvalidName(String),
}

/// Why an event's data does not decode as the message it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data does not decode as {message}: {reason}")]
pub struct DecodeFailure {
    /// Full name of the message.
    pub message: String,
    /// The decoder's message, naming the first failing field.
    pub reason: String,
}

/// Files registered through Admin, served to protox from memory.
#[derive(Debug, Clone, Default)]
struct MemoryResolver {
    sources: BTreeMap<String, String>,
}

impl FileResolver for MemoryResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.sources.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[derive(Debug)]
struct Compiled {
    pool: DescriptorPool,
    registered: MemoryResolver,
}

/// The schema registry.
#[derive(Debug)]
pub struct SchemaRegistry {
    files: Vec<PathBuf>,
    include: Vec<PathBuf>,
    store: Option<PathBuf>,
    compiled: RwLock<Compiled>,
}

impl SchemaRegistry {
    /// An empty registry: no event is decoded.
    pub fn empty() -> SchemaRegistry {
        SchemaRegistry {
            files: Vec::new(),
            include: Vec::new(),
            store: None,
            compiled: RwLock::new(Compiled {
                pool: DescriptorPool::new(),
                registered: MemoryResolver::default(),
            }),
        }
    }

    /// Compiles the config's files and the ones registered earlier (read
    /// from `store`, which is created if missing).
    pub fn load(
        files: &[PathBuf],
        include: &[PathBuf],
        store: Option<&Path>,
    ) -> Result<SchemaRegistry, SchemaError> {
        let mut registered = MemoryResolver::default();
        if let Some(store) = store {
            std::fs::create_dir_all(store).map_err(|source| SchemaError::Io {
                path: store.to_path_buf(),
                source,
            })?;
            let entries = std::fs::read_dir(store).map_err(|source| SchemaError::Io {
                path: store.to_path_buf(),
                source,
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".proto") {
                    let source = std::fs::read_to_string(entry.path()).map_err(|source| {
                        SchemaError::Io {
                            path: entry.path(),
                            source,
                        }
                    })?;
                    registered.sources.insert(name, source);
                }
            }
        }
        let registry = SchemaRegistry {
            files: files.to_vec(),
            include: include.to_vec(),
            store: store.map(Path::to_path_buf),
            compiled: RwLock::new(Compiled {
                pool: DescriptorPool::new(),
                registered: registered.clone(),
            }),
        };
        let pool = registry.compile(&registered)?;
        if let Ok(mut compiled) = registry.compiled.write() {
            compiled.pool = pool;
        }
        Ok(registry)
    }

    fn compile(&self, registered: &MemoryResolver) -> Result<DescriptorPool, SchemaError> {
        let mut resolver = ChainFileResolver::new();
        resolver.add(registered.clone());
        for dir in &self.include {
            resolver.add(IncludeFileResolver::new(dir.clone()));
        }
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        let error = |e: protox::Error| {
            SchemaError::Compile(match e.file() {
                Some(file) => format!("{file}: {e}"),
                None => e.to_string(),
            })
        };
        for file in &self.files {
            let name = self.import_name(file);
            compiler.open_file(&name).map_err(error)?;
        }
        for name in registered.sources.keys() {
            compiler.open_file(name).map_err(error)?;
        }
        Ok(compiler.descriptor_pool())
    }

    /// A config file's name as imports see it: relative to the first
    /// include directory that holds it, else its file name.
    fn import_name(&self, file: &Path) -> String {
        self.include
            .iter()
            .find_map(|dir| file.strip_prefix(dir).ok())
            .unwrap_or_else(|| Path::new(file.file_name().unwrap_or_default()))
            .to_string_lossy()
            .into_owned()
    }

    /// Compiles and adds a `.proto` source (replacing one of the same
    /// name); on error nothing changes. Returns the messages it defines.
    pub fn register(&self, name: &str, source: &str) -> Result<Vec<String>, SchemaError> {
        let plain = !name.contains('/') && !name.contains('\\') && !name.starts_with('.');
        if !plain || !name.ends_with(".proto") {
            return Err(SchemaError::InvalidName(name.to_string()));
        }
        let mut registered = self
            .compiled
            .read()
            .map(|c| c.registered.clone())
            .unwrap_or_default();
        registered
            .sources
            .insert(name.to_string(), source.to_string());
        let pool = self.compile(&registered)?;
        if let Some(store) = &self.store {
            let path = store.join(name);
            std::fs::write(&path, source).map_err(|source| SchemaError::Io { path, source })?;
        }
        let messages = pool
            .get_file_by_name(name)
            .map(|file| file.messages().map(|m| m.full_name().to_string()).collect())
            .unwrap_or_default();
        if let Ok(mut compiled) = self.compiled.write() {
            *compiled = Compiled { pool, registered };
        }
        Ok(messages)
    }

    /// Full names of every registered message, sorted.
    pub fn messages(&self) -> Vec<String> {
        let Ok(compiled) = self.compiled.read() else {
            return Vec::new();
        };
        let mut names: Vec<String> = compiled
            .pool
            .all_messages()
            .map(|m| m.full_name().to_string())
            .filter(|name| !name.starts_with("google.protobuf."))
            .collect();
        names.sort();
        names
    }

    /// The registered message an event names, if any.
    fn message_for(&self, event: &CloudEvent) -> Option<MessageDescriptor> {
        let compiled = self.compiled.read().ok()?;
        let by_schema = event
            .data_schema
            .as_deref()
            .map(|schema| schema.rsplit('/').next().unwrap_or(schema))
            .and_then(|name| compiled.pool.get_message_by_name(name));
        let by_any = match &event.data {
            Some(EventData::ProtoData(any)) => compiled
                .pool
                .get_message_by_name(any.type_url.rsplit('/').next().unwrap_or_default()),
            _ => None,
        };
        by_schema
            .or(by_any)
            .or_else(|| compiled.pool.get_message_by_name(&event.r#type))
    }

    /// Decodes the event's data as the registered message it names, into
    /// the JSON that patterns see (field names as in the `.proto` file,
    /// 64-bit integers as numbers). `Ok(None)`: no registered message
    /// applies (or the data is text).
    pub fn decode(&self, event: &CloudEvent) -> Result<Option<serde_json::Value>, DecodeFailure> {
        let bytes: &[u8] = match &event.data {
            Some(EventData::BinaryData(bytes)) => bytes,
            Some(EventData::ProtoData(any)) => &any.value,
            _ => return Ok(None),
        };
        let Some(descriptor) = self.message_for(event) else {
            return Ok(None);
        };
        let failure = |reason: String| DecodeFailure {
            message: descriptor.full_name().to_string(),
            reason,
        };
        let message = DynamicMessage::decode(descriptor.clone(), bytes).map_err(|e| {
            failure(match first_bad_field(&descriptor, bytes) {
                Some(field) => format!("field '{field}': {e}"),
                None => e.to_string(),
            })
        })?;
        let options = SerializeOptions::new()
            .stringify_64_bit_integers(false)
            .use_proto_field_name(true);
        message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map(Some)
            .map_err(|e| failure(e.to_string()))
    }
}

/// Walks the protobuf wire format of `bytes` as `descriptor` describes it
/// and names the first field whose encoding is wrong (dotted path through
/// nested messages), for error messages.
fn first_bad_field(descriptor: &MessageDescriptor, mut bytes: &[u8]) -> Option<String> {
    use prost::encoding::{WireType, decode_varint};
    while !bytes.is_empty() {
        let Ok(key) = decode_varint(&mut bytes) else {
            return Some("<field key>".into());
        };
        let field = descriptor.get_field((key >> 3) as u32);
        let name = || {
            field
                .as_ref()
                .map_or_else(|| format!("#{}", key >> 3), |f| f.name().to_string())
        };
        let Ok(wire) = WireType::try_from(key & 7) else {
            return Some(name());
        };
        let value: &[u8] = match wire {
            WireType::Varint => {
                if decode_varint(&mut bytes).is_err() {
                    return Some(name());
                }
                &[]
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let width = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                let Some((value, rest)) = bytes.split_at_checked(width) else {
                    return Some(name());
                };
                bytes = rest;
                value
            }
            WireType::LengthDelimited => {
                let length = decode_varint(&mut bytes)
                    .ok()
                    .and_then(|l| usize::try_from(l).ok());
                let Some((value, rest)) = length.and_then(|l| bytes.split_at_checked(l)) else {
                    return Some(name());
                };
                bytes = rest;
                value
            }
            WireType::StartGroup | WireType::EndGroup => return Some(name()),
        };
        let Some(field) = field else { continue };
        let kind = field.kind();
        let packed = wire == WireType::LengthDelimited
            && field.is_list()
            && kind.wire_type() != WireType::LengthDelimited;
        if kind.wire_type() != wire && !packed {
            return Some(field.name().to_string());
        }
        match kind {
            prost_reflect::Kind::Message(inner) if wire == WireType::LengthDelimited => {
                if let Some(nested) = first_bad_field(&inner, value) {
                    return Some(format!("{}.{nested}", field.name()));
                }
            }
            prost_reflect::Kind::String if std::str::from_utf8(value).is_err() => {
                return Some(field.name().to_string());
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
syntax = "proto3";
package shop.v1;
message OrderPlaced {
  string order_id = 1;
  int64 total_cents = 2;
  repeated string tags = 3;
  Address address = 4;
}
message Address { string country = 1; }
"#;

    #[derive(Clone, PartialEq, prost::Message)]
    struct OrderPlaced {
        #[prost(string, tag = "1")]
        order_id: String,
        #[prost(int64, tag = "2")]
        total_cents: i64,
        #[prost(string, repeated, tag = "3")]
        tags: Vec<String>,
    }

    fn event(schema: Option<&str>, event_type: &str, data: Vec<u8>) -> CloudEvent {
        CloudEvent {
            r#type: event_type.into(),
            data_schema: schema.map(String::from),
            data_content_type: Some("application/protobuf".into()),
            data: Some(EventData::BinaryData(data)),
            ..CloudEvent::default()
        }
    }

    #[test]
    fn registered_messages_decode_into_json_by_dataschema_or_type() {
        let registry = SchemaRegistry::empty();
        let messages = registry.register("shop.proto", SHOP).expect("compiles");
        assert_eq!(messages, vec!["shop.v1.OrderPlaced", "shop.v1.Address"]);
        let bytes = prost::Message::encode_to_vec(&OrderPlaced {
            order_id: "o-1".into(),
            total_cents: 12_000_000_000,
            tags: vec!["vip".into()],
        });
        let by_schema = event(
            Some("type.googleapis.com/shop.v1.OrderPlaced"),
            "whatever",
            bytes.clone(),
        );
        let json = registry
            .decode(&by_schema)
            .expect("decodes")
            .expect("a message applies");
        assert_eq!(json["order_id"], "o-1");
        assert_eq!(
            json["total_cents"], 12_000_000_000i64,
            "64-bit integers stay numbers"
        );
        assert_eq!(json["tags"][0], "vip");
        let by_type = event(None, "shop.v1.OrderPlaced", bytes);
        assert!(registry.decode(&by_type).expect("decodes").is_some());
        assert_eq!(
            registry
                .decode(&event(None, "other", vec![1]))
                .expect("no schema"),
            None
        );
    }

    #[test]
    fn undecodable_data_names_the_message_and_field() {
        let registry = SchemaRegistry::empty();
        registry.register("shop.proto", SHOP).expect("compiles");
        // Field 2 (total_cents, varint) sent as a length-delimited string.
        let bad = event(None, "shop.v1.OrderPlaced", vec![0x12, 0x01, b'x']);
        let failure = registry.decode(&bad).expect_err("does not decode");
        assert_eq!(failure.message, "shop.v1.OrderPlaced");
        assert!(failure.reason.contains("total_cents"), "{}", failure.reason);
    }

    #[test]
    fn bad_sources_and_names_are_refused_without_changing_anything() {
        let registry = SchemaRegistry::empty();
        registry.register("shop.proto", SHOP).expect("compiles");
        let err = registry
            .register("broken.proto", "syntax = \"proto3\"; message {")
            .expect_err("syntax error");
        assert!(err.to_string().contains("broken.proto"), "{err}");
        assert!(matches!(
            registry.register("../x.proto", SHOP),
            Err(SchemaError::InvalidName(_))
        ));
        assert_eq!(
            registry.messages(),
            vec!["shop.v1.Address", "shop.v1.OrderPlaced"]
        );
    }

    #[test]
    fn config_files_and_the_store_load_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let protos = dir.path().join("protos");
        std::fs::create_dir_all(&protos).expect("mkdir");
        std::fs::write(protos.join("shop.proto"), SHOP).expect("write");
        let store = dir.path().join("store");
        {
            let registry = SchemaRegistry::load(
                &[protos.join("shop.proto")],
                std::slice::from_ref(&protos),
                Some(&store),
            )
            .expect("loads");
            registry
                .register("extra.proto", "syntax = \"proto3\"; package x; import \"shop.proto\"; message Wrapper { shop.v1.OrderPlaced order = 1; }")
                .expect("registers, importing the config file");
        }
        let registry = SchemaRegistry::load(&[protos.join("shop.proto")], &[protos], Some(&store))
            .expect("reloads");
        assert!(
            registry.messages().contains(&"x.Wrapper".to_string()),
            "registered schemas survive a restart"
        );
    }
}
