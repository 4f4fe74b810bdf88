//! The thin Table Storage client against Azurite: insert, get, update and merge with
//! If-Match (a stale writer loses), delete, and queries that follow continuations.

use s3_blob_sync::azure::table::{Entity, Filter};
use s3_blob_sync::error::ErrorKind;

use crate::harness::TestCtx;

#[tokio::test]
async fn table_operations_with_optimistic_concurrency_and_continuations() {
    let ctx = TestCtx::new("table").await;
    let t = ctx.table();
    t.create_if_missing().await.unwrap();
    t.create_if_missing().await.unwrap(); // idempotent

    let mut e = Entity::new("p:0a", "r1");
    e.set_str("Key", "a/b#c?d\\e ü").set_i64("Size", 5_000_000_000);
    let tag1 = t.insert(&e).await.unwrap();
    // Another entity under the same keys loses...
    let mut other = e.clone();
    other.set_str("Key", "someone else's");
    assert_eq!(
        t.insert(&other).await.unwrap_err().kind(),
        ErrorKind::Precondition,
        "second insert"
    );
    // ...while the very same entity is taken as this insert, landed on an earlier try whose
    // reply was lost (decisions 59): it answers with the stored ETag.
    assert_eq!(t.insert(&e).await.unwrap(), tag1, "an identical insert is 'maybe mine'");
    let got = t.get("p:0a", "r1").await.unwrap().unwrap();
    assert_eq!(got.get_str("Key"), Some("a/b#c?d\\e ü"));
    assert_eq!(got.get_i64("Size"), Some(5_000_000_000));
    assert!(t.get("p:0a", "nope").await.unwrap().is_none());

    // Update with the current ETag wins; a writer holding the old ETag loses.
    let mut upd = got.clone();
    upd.set_str("Outcome", "copied");
    let tag2 = t.update(&upd, Some(&tag1)).await.unwrap();
    assert_ne!(tag1, tag2);
    let stale = t.update(&upd, Some(&tag1)).await.unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Precondition);

    // Merge keeps the other properties.
    let mut m = Entity::new("p:0a", "r1");
    m.set_str("Reason", "merged");
    assert_eq!(
        t.merge(&m, Some(&tag1)).await.unwrap_err().kind(),
        ErrorKind::Precondition
    );
    t.merge(&m, Some(&tag2)).await.unwrap();
    let got = t.get("p:0a", "r1").await.unwrap().unwrap();
    assert_eq!(
        (got.get_str("Outcome"), got.get_str("Reason")),
        (Some("copied"), Some("merged"))
    );
    assert_eq!(got.get_str("Key"), Some("a/b#c?d\\e ü"));

    // Queries page with continuation tokens.
    for i in 0..7 {
        let mut e = Entity::new(format!("q:{}", i % 3), format!("r{i}"));
        e.set_str("Bucket", "qb");
        t.insert(&e).await.unwrap();
    }
    let (page, next) = t.query(Some("Bucket eq 'qb'"), Some(3), None).await.unwrap();
    assert_eq!(page.len(), 3);
    assert!(next.is_some(), "a continuation after a short page");
    let all = t.query_all(Some("Bucket eq 'qb'")).await.unwrap();
    assert_eq!(all.len(), 7);

    t.delete("p:0a", "r1", "*").await.unwrap();
    assert!(t.get("p:0a", "r1").await.unwrap().is_none());
    t.delete("p:0a", "r1", "*").await.unwrap(); // a missing row is fine

    // A quote in a key or a filtered value is one literal quote, in an entity's address and in
    // a filter alike: the row is found, changed and removed, and the filter matches it alone.
    let mut q = Entity::new("o'neil", "it's");
    q.set_str("Bucket", "b'1");
    t.insert(&q).await.unwrap();
    let mut near = Entity::new("o'neil", "its");
    near.set_str("Bucket", "b1");
    t.insert(&near).await.unwrap();
    assert_eq!(
        t.get("o'neil", "it's").await.unwrap().unwrap().get_str("Bucket"),
        Some("b'1")
    );
    let f = Filter::eq("PartitionKey", "o'neil").and("Bucket", "eq", "b'1");
    let found = t.query_all(Some(f.as_str())).await.unwrap();
    assert_eq!(found.iter().map(|e| e.row_key.as_str()).collect::<Vec<_>>(), ["it's"]);
    t.delete("o'neil", "it's", "*").await.unwrap();
    assert!(t.get("o'neil", "it's").await.unwrap().is_none());
    assert!(
        t.get("o'neil", "its").await.unwrap().is_some(),
        "only the quoted row went"
    );
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_page_plan_of_a_thousand_long_keys_round_trips_and_the_first_saved_rules() {
    use s3_blob_sync::model::ListedObject;
    use s3_blob_sync::state::runs::pages::PagePlan;
    use s3_blob_sync::state::runs::store::RunStore;
    let ctx = TestCtx::new("plan").await;
    let table = ctx.table();
    table.create_if_missing().await.unwrap();
    let store = RunStore::new(table);
    // S3's longest keys (1,024 bytes), non-ASCII, quotes and backslashes included: about
    // 1.1 MB of listing, more than one entity holds, and more than 4 MiB if every quote and
    // backslash were escaped twice on its way into a transaction.
    let plan = |tag: char| {
        PagePlan::new(
            (0..1000)
                .map(|i| ListedObject {
                    key: format!("{i:04}{tag}{}", "é\"\\".repeat(254)),
                    size: i,
                    etag: format!("{i:032x}"),
                    storage_class: Some("STANDARD".into()),
                    last_modified: Some("2026-12-02T09:00:00Z".into()),
                })
                .collect(),
            Some("token-after".into()),
        )
    };
    let id = "20261202T090000Z-0badc0de";
    assert_eq!(store.page_plan(id, 2, 3).await.unwrap(), None);
    let first = store.save_page_plan(id, 2, 3, plan('a')).await.unwrap();
    assert!(first.rows > 1, "{} rows", first.rows);
    let read = store.page_plan(id, 2, 3).await.unwrap().unwrap();
    assert_eq!((read.objects, read.next), (plan('a').objects, plan('a').next));
    // A later attempt that listed other keys gets the first attempt's listing back.
    let second = store.save_page_plan(id, 2, 3, plan('b')).await.unwrap();
    assert_eq!(second.objects, plan('a').objects);
    assert_eq!(store.page_plan(id, 2, 4).await.unwrap(), None, "pages are apart");
    assert_eq!(store.page_plan(id, 0, 3).await.unwrap(), None, "shards are apart");
    let other = store.save_page_plan(id, 0, 3, plan('b')).await.unwrap();
    assert_eq!(other.objects, plan('b').objects);
    store.drop_page_plan(id, 2, 3, first.rows).await;
    assert_eq!(store.page_plan(id, 2, 3).await.unwrap(), None);
    assert_eq!(
        store.page_plan(id, 0, 3).await.unwrap().unwrap().objects,
        plan('b').objects
    );
    ctx.cleanup().await;
}
