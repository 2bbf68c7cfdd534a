//! `portcullis audit` against a live cluster. No kube-apiserver can run here, so kube's mock
//! service (tower-test) answers the paginated pod LIST with real PodList shapes from
//! `tests/data/cluster`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use crate::common::data_path;
use kube::client::Body;
use portcullis::object_review::{ClusterPods, group_by_controller, read_cluster};

type MockHandle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;

fn respond(status: u16, body: Vec<u8>) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn pods_of_every_namespace_are_listed_page_by_page() {
    let (service, mut handle): (_, MockHandle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let mut uris = Vec::new();
        for page in ["cluster/podlist-page1.json", "cluster/podlist-page2.json"] {
            let (request, send) = handle.next_request().await.expect("a LIST request");
            uris.push(request.uri().to_string());
            send.send_response(respond(200, std::fs::read(data_path(page)).unwrap()));
        }
        uris
    });
    let objects = read_cluster(&ClusterPods::new(client)).await.unwrap();
    let uris = server.await.unwrap();
    assert!(uris[0].starts_with("/api/v1/pods?"), "{uris:?}");
    assert!(uris[0].contains("limit=500"), "{uris:?}");
    assert!(uris[1].contains("continue=eyJ2Ij"), "{uris:?}");
    let names: Vec<String> = objects.iter().map(|o| o.display()).collect();
    assert_eq!(
        names,
        [
            "Pod kube-system/coredns-76f75df574-abcde",
            "Pod shop/web-7d4b9c-x2k9p",
            "Pod shop/web-7d4b9c-q8m2z",
            "Pod shop/legacy",
        ]
    );
    // Typed list items come back with their type, so the engine finds the pod spec.
    assert_eq!(objects[3].object["kind"], "Pod");
    assert_eq!(
        objects[3].object["spec"]["containers"][0]["image"],
        "busybox"
    );
    assert_eq!(group_by_controller(objects).len(), 3);
}

#[tokio::test]
async fn a_forbidden_list_is_an_error_that_names_the_cause() {
    let (service, mut handle): (_, MockHandle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "default");
    tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("a LIST request");
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403
        });
        send.send_response(respond(403, serde_json::to_vec(&status).unwrap()));
    });
    let err = read_cluster(&ClusterPods::new(client)).await.unwrap_err();
    assert!(err.to_string().contains("cannot list resource"), "{err}");
}
