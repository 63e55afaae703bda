//! The system scenario, driven through the gateway with real HTTP and
//! WebSocket clients; the embedded and the distributed tests both run it.
#![allow(dead_code)]

use std::time::Duration;

use http::{Method, StatusCode};
use mamey_core::BoxError;
use serde_json::{Value, json};
use teamhub::client::{Api, Live, Session};

/// How long anything asynchronous (an automation, a live push) may take.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// What the scenario set up, for checks that follow it.
pub(crate) struct World {
    pub(crate) api: Api,
    pub(crate) a: Session,
    pub(crate) b: Session,
    pub(crate) a_live: Live,
    pub(crate) b_live: Live,
    pub(crate) workspace: i64,
    pub(crate) board: i64,
    pub(crate) run: String,
}

impl World {
    pub(crate) fn as_a(&self) -> Api {
        self.api.with_token(&self.a.access_token)
    }

    pub(crate) fn as_b(&self) -> Api {
        self.api.with_token(&self.b.access_token)
    }
}

/// A run id: names this run's users apart from earlier runs'.
pub(crate) fn run_id() -> String {
    format!("{:x}", teamhub::ids::next())
}

/// Polls `probe` until it returns `Some`, for at most `WAIT`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, BoxError>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what}: not within {WAIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two users sign up and in, each opens a live socket; A makes a workspace
/// and a board and adds B.
pub(crate) async fn set_up(base: &str) -> Result<World, BoxError> {
    let api = Api::new(base);
    let run = run_id();
    let (a_email, b_email) = (
        format!("a-{run}@example.com"),
        format!("b-{run}@example.com"),
    );
    api.sign_up(&a_email, &format!("ada{run}"), "correct horse battery")
        .await?;
    api.sign_up(&b_email, &format!("bob{run}"), "correct horse battery")
        .await?;

    // Bad input: a duplicate sign-up, malformed JSON, a wrong password.
    let again = json!({ "email": a_email, "name": "ada", "password": "correct horse battery" });
    let answer = api
        .call(Method::POST, "/api/identity/sign-up", Some(&again))
        .await?;
    assert_eq!(
        answer.status,
        StatusCode::CONFLICT,
        "duplicate sign-up: {}",
        answer.body
    );
    assert_problem(&answer.body);
    let answer = api
        .send(
            Method::POST,
            "/api/identity/sign-up",
            Some("application/json"),
            bytes::Bytes::from_static(b"{\"email\": "),
        )
        .await?;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "malformed JSON: {}",
        answer.body
    );
    assert_problem(&answer.body);
    let wrong = json!({ "email": a_email, "password": "not the password" });
    let answer = api
        .call(Method::POST, "/api/identity/sign-in", Some(&wrong))
        .await?;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    let a = api.sign_in(&a_email, "correct horse battery").await?;
    let b = api.sign_in(&b_email, "correct horse battery").await?;
    let me = api
        .with_token(&a.access_token)
        .get("/api/identity/me")
        .await?;
    assert_eq!(me["id"].as_i64(), Some(a.user_id));
    // No token: 401 at the gateway.
    let answer = api
        .call(Method::GET, "/api/boards/workspaces/1", None)
        .await?;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    let a_live = api.with_token(&a.access_token).live().await?;
    let b_live = api.with_token(&b.access_token).live().await?;

    let as_a = api.with_token(&a.access_token);
    let workspace = as_a
        .create(
            "/api/boards/workspaces",
            &json!({ "name": format!("team {run}") }),
        )
        .await?;
    let board = as_a
        .create(
            &format!("/api/boards/workspaces/{workspace}/boards"),
            &json!({ "name": "sprint" }),
        )
        .await?;
    as_a.call(
        Method::POST,
        &format!("/api/boards/workspaces/{workspace}/members"),
        Some(&json!({ "userId": b.user_id })),
    )
    .await?
    .expect(StatusCode::NO_CONTENT)?;
    // Adding B again, or a user who does not exist.
    let answer = as_a
        .call(
            Method::POST,
            &format!("/api/boards/workspaces/{workspace}/members"),
            Some(&json!({ "userId": b.user_id })),
        )
        .await?;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    let answer = as_a
        .call(
            Method::POST,
            &format!("/api/boards/workspaces/{workspace}/members"),
            Some(&json!({ "userId": 1 })),
        )
        .await?;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    Ok(World {
        api,
        a,
        b,
        a_live,
        b_live,
        workspace,
        board,
        run,
    })
}

/// The body is RFC 9457 problem+json.
pub(crate) fn assert_problem(body: &Value) {
    assert!(
        body["status"].is_u64() && body["title"].is_string(),
        "not a problem document: {body}"
    );
}

/// A non-member gets 403 on the board; unknown things are 404.
pub(crate) async fn strangers_are_kept_out(world: &World) -> Result<(), BoxError> {
    let email = format!("c-{}@example.com", world.run);
    world
        .api
        .sign_up(&email, &format!("cy{}", world.run), "correct horse battery")
        .await?;
    let c = world.api.sign_in(&email, "correct horse battery").await?;
    let as_c = world.api.with_token(&c.access_token);
    let board = world.board;
    for (method, path, body) in [
        (Method::GET, format!("/api/boards/boards/{board}"), None),
        (
            Method::POST,
            format!("/api/boards/boards/{board}/cards"),
            Some(json!({ "title": "sneaky" })),
        ),
        (
            Method::GET,
            format!("/api/chat/channels/board:{board}/messages"),
            None,
        ),
    ] {
        let answer = as_c.call(method, &path, body.as_ref()).await?;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            answer.body
        );
        assert_problem(&answer.body);
    }
    let answer = world
        .as_a()
        .call(Method::GET, "/api/boards/boards/1", None)
        .await?;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    let answer = world
        .as_a()
        .call(Method::GET, "/api/boards/cards/1", None)
        .await?;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    Ok(())
}

/// Whether `n` is the notification `kind` about card `card`.
pub(crate) fn is_about(n: &Value, kind: &str, card: i64) -> bool {
    n["kind"] == kind && n["data"]["card"]["id"].as_i64() == Some(card)
}

/// A creates a card: the automation assigns it, and both users see
/// `card_created` then `card_assigned` live. Returns the card.
pub(crate) async fn a_new_card_is_assigned(world: &mut World) -> Result<i64, BoxError> {
    let card = world
        .as_a()
        .create(
            &format!("/api/boards/boards/{}/cards", world.board),
            &json!({ "title": "write the docs", "labels": ["docs"], "storyPoints": 2 }),
        )
        .await?;
    for live in [&mut world.a_live, &mut world.b_live] {
        let seen = live
            .until(WAIT, |n| is_about(n, "card_assigned", card))
            .await?;
        let created = seen.iter().position(|n| is_about(n, "card_created", card));
        let assigned = seen.len() - 1;
        assert!(
            created.is_some_and(|c| c < assigned),
            "card_created must come before card_assigned: {seen:?}"
        );
        let assignee = seen[assigned]["data"]["card"]["assignee"].as_i64();
        assert!(
            assignee == Some(world.a.user_id) || assignee == Some(world.b.user_id),
            "assigned to a member: {:?}",
            seen[assigned]
        );
    }
    let snapshot = world
        .as_a()
        .get(&format!("/api/boards/cards/{card}"))
        .await?;
    assert!(snapshot["assignee"].is_i64(), "{snapshot}");
    Ok(card)
}

/// Children's points sum into the parent; when every child is done, the
/// parent is done and unassigned.
pub(crate) async fn children_drive_their_parent(world: &World) -> Result<(), BoxError> {
    let as_a = world.as_a();
    let board = world.board;
    let parent = as_a
        .create(
            &format!("/api/boards/boards/{board}/cards"),
            &json!({ "title": "epic" }),
        )
        .await?;
    let mut children = Vec::new();
    for points in [3, 5] {
        children.push(
            as_a.create(
                &format!("/api/boards/boards/{board}/cards"),
                &json!({ "title": format!("part {points}"), "parentId": parent, "storyPoints": points }),
            )
            .await?,
        );
    }
    let path = format!("/api/boards/cards/{parent}");
    eventually("the parent's points become 8", || async {
        let card = as_a.get(&path).await?;
        Ok((card["storyPoints"].as_i64() == Some(8)).then_some(()))
    })
    .await?;
    for child in &children {
        as_a.call(
            Method::POST,
            &format!("/api/boards/cards/{child}/move"),
            Some(&json!({ "list": "done" })),
        )
        .await?
        .expect(StatusCode::NO_CONTENT)?;
    }
    eventually("the parent moves to done, unassigned", || async {
        let card = as_a.get(&path).await?;
        Ok((card["list"] == "done" && card["assignee"].is_null()).then_some(()))
    })
    .await?;
    Ok(())
}

/// A card with children cannot be deleted (409); deleting a child tells
/// both users and settles its parent: the remaining child is done, so the
/// parent is, and its points are that child's. The deleted card is gone
/// (404). Returns the deleted card as `card_deleted` carried it.
pub(crate) async fn deleting_a_card_settles_its_parent(
    world: &mut World,
) -> Result<Value, BoxError> {
    let as_a = world.as_a();
    let board = world.board;
    let cards = format!("/api/boards/boards/{board}/cards");
    let parent = as_a.create(&cards, &json!({ "title": "release" })).await?;
    let finished = as_a
        .create(
            &cards,
            &json!({ "title": "notes", "parentId": parent, "storyPoints": 3, "list": "done" }),
        )
        .await?;
    let dropped = as_a
        .create(
            &cards,
            &json!({ "title": "installer", "parentId": parent, "storyPoints": 5 }),
        )
        .await?;
    let parent_path = format!("/api/boards/cards/{parent}");
    eventually("the parent's points become 8", || async {
        let card = as_a.get(&parent_path).await?;
        Ok((card["storyPoints"].as_i64() == Some(8)).then_some(()))
    })
    .await?;

    let refused = as_a.call(Method::DELETE, &parent_path, None).await?;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_problem(&refused.body);

    let dropped_path = format!("/api/boards/cards/{dropped}");
    as_a.call(Method::DELETE, &dropped_path, None)
        .await?
        .expect(StatusCode::NO_CONTENT)?;
    let mut snapshot = Value::Null;
    for live in [&mut world.a_live, &mut world.b_live] {
        let seen = live
            .until(WAIT, |n| is_about(n, "card_deleted", dropped))
            .await?;
        snapshot = seen[seen.len() - 1]["data"]["card"].clone();
    }
    let gone = as_a.call(Method::GET, &dropped_path, None).await?;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    let again = as_a.call(Method::DELETE, &dropped_path, None).await?;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    assert_problem(&again.body);
    eventually(
        "the parent is done with the remaining child's points",
        || async {
            let card = as_a.get(&parent_path).await?;
            Ok((card["list"] == "done" && card["storyPoints"].as_i64() == Some(3)).then_some(()))
        },
    )
    .await?;
    let listed = as_a.get(&format!("/api/boards/boards/{board}")).await?;
    let ids: Vec<i64> = listed["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    assert!(
        ids.contains(&finished) && !ids.contains(&dropped),
        "{ids:?}"
    );
    Ok(snapshot)
}

/// A posts on the board's channel: B gets it live and in history; 250
/// messages page through history once each, in order.
pub(crate) async fn chat_is_live_and_pages(world: &mut World) -> Result<(), BoxError> {
    let channel = format!("board:{}", world.board);
    let path = format!("/api/chat/channels/{channel}/messages");
    let first = world
        .as_a()
        .create(
            &path,
            &json!({ "text": format!("hello @bob{}", world.run) }),
        )
        .await?;
    let seen = world
        .b_live
        .until(WAIT, |n| {
            n["kind"] == "message_posted" && n["data"]["messageId"].as_i64() == Some(first)
        })
        .await?;
    assert_eq!(
        seen.last().map(|n| n["channel"].clone()),
        Some(json!(channel))
    );

    let mut posted = vec![first];
    for i in 0..249 {
        posted.push(
            world
                .as_a()
                .create(&path, &json!({ "text": format!("m{i}") }))
                .await?,
        );
    }
    let (mut after, mut listed) = (0_i64, Vec::new());
    loop {
        let page = world
            .as_b()
            .get(&format!("{path}?after={after}&limit=100"))
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 100);
        listed.extend(items.iter().filter_map(|m| m["id"].as_i64()));
        match page["next"].as_i64() {
            Some(next) if !items.is_empty() => after = next,
            _ => break,
        }
    }
    assert_eq!(listed, posted, "history lists each message once, in order");
    // Bad paging input is a 400.
    let answer = world
        .as_b()
        .call(Method::GET, &format!("{path}?limit=1000"), None)
        .await?;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    Ok(())
}

/// B's feed lists what happened: the assignment, the chat message.
pub(crate) async fn the_feed_lists_it(world: &World) -> Result<(), BoxError> {
    let as_b = world.as_b();
    eventually("B's feed", || async {
        let mut kinds = Vec::new();
        let mut after = 0_i64;
        loop {
            let page = as_b
                .get(&format!("/api/notifications/feed?after={after}&limit=100"))
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            kinds.extend(
                items
                    .iter()
                    .filter_map(|n| n["kind"].as_str().map(str::to_owned)),
            );
            match page["next"].as_i64() {
                Some(next) if !items.is_empty() => after = next,
                _ => break,
            }
        }
        let has = |k: &str| kinds.iter().any(|x| x == k);
        Ok((has("card_created")
            && has("card_assigned")
            && has("message_posted")
            && has("member_added"))
        .then_some(()))
    })
    .await
}
