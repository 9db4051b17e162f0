//! What generic gRPC tools rely on: the standard health service and server
//! reflection (what grpcurl uses to list and describe services).

mod common;

use common::*;
use prost::Message;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn health_reports_serving() {
    let tc = TestCollector::start().await;
    for channel in [tcp_channel(tc.addr).await, unix_channel(&tc.socket).await] {
        let mut health = HealthClient::new(channel);
        for service in ["", "sockeye.v1.CollectorService"] {
            let resp = within(
                "health check",
                health.check(HealthCheckRequest {
                    service: service.into(),
                }),
            )
            .await
            .unwrap()
            .into_inner();
            assert_eq!(resp.status(), ServingStatus::Serving, "{service:?}");
        }
        let unknown = within(
            "health check",
            health.check(HealthCheckRequest {
                service: "no.such.Service".into(),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
    tc.stop().await;
}

#[tokio::test]
async fn health_watch_sees_not_serving_on_shutdown() {
    let tc = TestCollector::start().await;
    let mut health = HealthClient::new(tcp_channel(tc.addr).await);
    let mut watch = within(
        "health watch",
        health.watch(HealthCheckRequest {
            service: "sockeye.v1.CollectorService".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let first = within("status", watch.message()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    tc.collector.shutdown().await;
    let next = within("status", watch.message()).await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    tc.stop().await;
}

async fn list_services_v1(tc: &TestCollector) -> Vec<String> {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(tcp_channel(tc.addr).await);
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut resp = within(
        "reflection",
        client.server_reflection_info(tokio_stream::iter(vec![req])),
    )
    .await
    .unwrap()
    .into_inner();
    let msg = within("reflection answer", resp.message())
        .await
        .unwrap()
        .unwrap();
    match msg.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let tc = TestCollector::start().await;
    let services = list_services_v1(&tc).await;
    for want in [
        "sockeye.v1.CollectorService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.iter().any(|s| s == want), "{want} in {services:?}");
    }

    // grpcurl describe: the file that defines the service, with its methods.
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(tcp_channel(tc.addr).await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "sockeye.v1.CollectorService".into(),
            ),
        ),
    };
    let mut resp = within(
        "reflection",
        client.server_reflection_info(tokio_stream::iter(vec![req])),
    )
    .await
    .unwrap()
    .into_inner();
    let msg = within("reflection answer", resp.message())
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        msg.message_response
    else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let methods: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "CollectorService")
        .flat_map(|s| s.method.into_iter().map(|m| m.name().to_string()))
        .collect();
    assert_eq!(
        methods,
        [
            "Push",
            "QueryTop",
            "GetClusterSnapshot",
            "WatchWindows",
            "ListFindings"
        ]
    );
    tc.stop().await;
}
