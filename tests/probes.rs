//! What tools and orchestrators find without the .proto files: gRPC
//! reflection (v1 and v1alpha, as grpcurl, grpcui and Postman use it)
//! lists and describes every service; `/healthz` and `/readyz` answer on
//! the HTTP port.

mod support;

use support::*;
use tonic_reflection::pb::{v1, v1alpha};

const SERVICES: [&str; 4] = [
    "switchyard.v1.Publisher",
    "switchyard.v1.Subscriber",
    "switchyard.v1.Admin",
    "grpc.health.v1.Health",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_and_describe_every_service() {
    let (_dir, broker) = start_broker("", ORDER_RULES);
    let channel = tonic::transport::Endpoint::from_shared(broker.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");

    // v1: list the services, then fetch the file that defines Admin.
    use v1::server_reflection_request::MessageRequest as Request1;
    use v1::server_reflection_response::MessageResponse as Response1;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let ask = |request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = vec![
        ask(Request1::ListServices(String::new())),
        ask(Request1::FileContainingSymbol("switchyard.v1.Admin".into())),
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection v1")
        .into_inner();
    let listed = answers.message().await.expect("answer").expect("list");
    let Some(Response1::ListServicesResponse(list)) = listed.message_response else {
        panic!("expected a service list: {listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in SERVICES {
        assert!(names.contains(&service), "{service} in {names:?}");
    }
    let described = answers.message().await.expect("answer").expect("file");
    let Some(Response1::FileDescriptorResponse(files)) = described.message_response else {
        panic!("expected descriptors: {described:?}");
    };
    let admin = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| <prost_types::FileDescriptorProto as prost::Message>::decode(&bytes[..]))
        .find_map(|file| {
            let file = file.expect("a valid descriptor");
            file.service
                .iter()
                .any(|s| s.name() == "Admin")
                .then_some(file)
        })
        .expect("the file defining Admin");
    let admin_service = admin
        .service
        .iter()
        .find(|s| s.name() == "Admin")
        .expect("Admin");
    assert!(
        admin_service
            .method
            .iter()
            .any(|m| m.name() == "CreateSubscription"),
        "{admin_service:?}"
    );

    // v1alpha, which older tools still use.
    use v1alpha::server_reflection_request::MessageRequest as RequestAlpha;
    use v1alpha::server_reflection_response::MessageResponse as ResponseAlpha;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(RequestAlpha::ListServices(String::new())),
        }]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let listed = answers.message().await.expect("answer").expect("list");
    let Some(ResponseAlpha::ListServicesResponse(list)) = listed.message_response else {
        panic!("expected a service list: {listed:?}");
    };
    for service in SERVICES {
        assert!(list.service.iter().any(|s| s.name == service), "{service}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_on_the_http_port() {
    let (_dir, broker) = start_broker("", ORDER_RULES);
    let live = broker.http_get("/healthz", &[]);
    assert!(
        live.starts_with("HTTP/1.1 200") || live.starts_with("HTTP/1.0 200"),
        "{live}"
    );
    assert!(live.ends_with("live\n"), "{live}");
    let ready = broker.http_get("/readyz", &[]);
    assert!(
        ready.starts_with("HTTP/1.1 200") || ready.starts_with("HTTP/1.0 200"),
        "{ready}"
    );
    assert!(ready.ends_with("ready\n"), "{ready}");
}
