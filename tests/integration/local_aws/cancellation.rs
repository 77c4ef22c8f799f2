//! CloudFormation's requests around one resource, as its documentation and its observed behaviour
//! describe them, on the local AWS:
//! - a Create cancelled because another resource failed: CloudFormation marks it CREATE_FAILED
//!   ("Resource creation cancelled") and sends a Delete with a physical id of its own making while
//!   the build still runs (https://github.com/aws/aws-cdk/pull/36951,
//!   https://github.com/aws-cloudformation/cloudformation-coverage-roadmap/issues/1814);
//! - an Update cancelled the same way, rolled back with another Update to the previous properties
//!   (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html);
//! - a late delivery of a request already answered (Lambda delivers asynchronous events at least
//!   once: https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html);
//! - a Create after a failed Create of the same logical id, and the Delete of the failed one;
//! - the Delete of a cancelled Create run before the Create itself (Lambda does not keep the
//!   order of asynchronous events).
//!
//! The AWS behaviour the records and leases rest on, which the local AWS (moto's Parameter Store)
//! reproduces: PutParameter without Overwrite fails with ParameterAlreadyExists when the name
//! exists, the atomic create
//! (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_PutParameter.html);
//! GetParameter answers ParameterNotFound for a name that does not exist
//! (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameter.html); and
//! GetParametersByPath with Recursive lists every level below a path, a page at a time
//! (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParametersByPath.html).

use crate::common;

use std::time::{Duration, Instant};

use common::audit::Audit;
use common::local::{InProcessScheduler, ResponseCatcher, invoke_until_answered};
use common::{ECS_AL2023, LocalAws, PROFILE, event, invoke, on_local_aws, report, stack_id};
use ecs_ami::aws::Aws;
use ecs_ami::cfn::HttpSink;
use ecs_ami::handler::{Handled, Limits, handle};
use serde_json::{Value, json};

const SECTION: &str = "CloudFormation's lifecycle: cancellation, rollback, late deliveries";

fn properties(steps: Value) -> Value {
    json!({
        "SourceAmiParameter": ECS_AL2023,
        "IamInstanceProfile": PROFILE,
        "Steps": steps,
    })
}

/// A request running in the background as Lambda would run it, with its own ResponseURL.
struct InFlight {
    task: tokio::task::JoinHandle<Option<ecs_ami::cfn::Response>>,
    catcher: ResponseCatcher,
}

async fn start(aws: &Aws, event: Value) -> InFlight {
    start_issued(aws, event, None).await
}

/// [`start`], with a ResponseURL presigned at `issued` (`X-Amz-Date`), as CloudFormation's are.
async fn start_issued(aws: &Aws, mut event: Value, issued: Option<&str>) -> InFlight {
    let catcher = ResponseCatcher::start().await.unwrap();
    event["ResponseURL"] = match issued {
        Some(at) => json!(format!("{}&X-Amz-Date={at}", catcher.url)),
        None => json!(catcher.url),
    };
    let aws = aws.clone();
    let task = tokio::spawn(async move {
        let sink = HttpSink::with_retries(3, Duration::from_millis(50));
        invoke_until_answered(event, &aws, &sink, Limits::default)
            .await
            .expect("handled")
            .map(|(response, _)| response)
    });
    InFlight { task, catcher }
}

impl InFlight {
    /// Waits for the request to end: what it answered (None: nothing), and that nothing reached
    /// its ResponseURL unless it answered.
    async fn end(mut self, within: Duration) -> Option<Value> {
        let answered = tokio::time::timeout(within, self.task)
            .await
            .expect("the cancelled request stops within the time allowed")
            .expect("no panic");
        let body = self.catcher.next(Duration::from_millis(500)).await;
        assert_eq!(answered.is_some(), body.is_some(), "{answered:?}");
        body.map(|b| serde_json::from_slice(&b).unwrap())
    }
}

/// Waits until `found` holds for the stack's resources, or panics after `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut found: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !found().await {
        assert!(Instant::now() < deadline, "never saw: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn leases(local: &LocalAws) -> Vec<String> {
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    let out = ssm
        .get_parameters_by_path()
        .path("/ecs-ami/leases")
        .recursive(true)
        .send()
        .await
        .unwrap();
    out.parameters()
        .iter()
        .filter_map(|p| p.name().map(str::to_owned))
        .collect()
}

/// A Create cancelled while its step runs, and one cancelled while its image is being made: the
/// Delete CloudFormation sends (with a physical id it made up) stops the build, removes the
/// builder, the half-made image and its snapshots, and only then answers; the cancelled Create
/// answers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_is_removed_before_its_delete_answers() {
    // Images stay pending for 8 s, so that the second Delete lands while one is being made.
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_IMAGE_DELAY", "8")]).await;
    let aws = local.aws().await;
    let ec2 = local.ec2().await;
    let mut timings = Vec::new();
    for (stack, moment, steps) in [
        (
            "cancel-step",
            "while its step runs",
            json!([{"Name": "slow", "Commands": ["sleep 60"]}]),
        ),
        (
            "cancel-image",
            "while its image is being made",
            json!([{"Name": "quick", "Commands": ["echo built > /etc/built"]}]),
        ),
    ] {
        let audit = Audit {
            ec2: ec2.clone(),
            stack_id: stack_id(stack),
        };
        let create = start(
            &aws,
            event("Create", stack, "req-create", None, properties(steps)),
        )
        .await;
        if moment.contains("step") {
            until(Duration::from_secs(60), "a running builder", || async {
                !audit.live_instances().await.is_empty()
            })
            .await;
            // The step has been sent and runs.
            tokio::time::sleep(Duration::from_secs(4)).await;
        } else {
            until(Duration::from_secs(60), "a half-made image", || async {
                !audit.images().await.is_empty()
            })
            .await;
        }
        let asked = Instant::now();
        let deleted = invoke(
            &aws,
            event(
                "Delete",
                stack,
                "req-delete",
                Some(&format!("{stack}-Ami-1QX7R2M9ZK4T")),
                json!({}),
            ),
        )
        .await;
        let took = asked.elapsed();
        assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
        let reason = deleted["Reason"].as_str().unwrap();
        assert!(
            reason.contains("Stopped the build of request req-create"),
            "{reason}"
        );
        // By the time the Delete answers, nothing is left.
        audit.assert_only(&[]).await;
        assert_eq!(leases(&local).await, Vec::<String>::new(), "leases left");
        // The cancelled build stopped on its own and answered nothing.
        assert_eq!(create.end(Duration::from_secs(30)).await, None);
        audit.assert_only(&[]).await;
        eprintln!("{moment}: Delete answered SUCCESS after {took:?}: {reason}");
        assert!(took < Duration::from_secs(60), "{took:?}");
        timings.push(format!("{moment}: {:.0} s", took.as_secs_f64()));
    }
    eprintln!(
        "Delete of a cancelled Create to SUCCESS: {}",
        timings.join(", ")
    );
    report::record(
        "lifecycle-cancel-01",
        SECTION,
        "A Create cancelled by CloudFormation (another resource failed), while its step runs and while its image is being made; then the Delete with CloudFormation's own physical id",
        "the Delete stops the build, removes builder, half-made image and snapshots, then answers SUCCESS; the cancelled Create answers nothing",
        Some(0),
    );
}

/// An Update cancelled while it rebuilds, then rolled back: the rollback Update returns the
/// previous AMI at once and the cancelled build is stopped and removed; the cancelled Update
/// answers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_update_is_removed_by_its_rollback() {
    let stack = "cancel-update";
    let (_local, aws, audit) = on_local_aws(stack).await;
    let first = properties(json!([{"Name": "a", "Commands": ["echo a > /etc/a"]}]));
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();

    let second = properties(json!([{"Name": "slow", "Commands": ["sleep 60"]}]));
    let mut update = event("Update", stack, "req-2", Some(&ami), second.clone());
    update["OldResourceProperties"] = first.clone();
    let in_flight = start(&aws, update).await;
    until(Duration::from_secs(60), "the rebuild's builder", || async {
        !audit.live_instances().await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut rollback = event("Update", stack, "req-3", Some(&ami), first.clone());
    rollback["OldResourceProperties"] = second;
    let asked = Instant::now();
    let rolled = invoke(&aws, rollback).await;
    let took = asked.elapsed();
    assert_eq!(rolled["Status"], "SUCCESS", "{rolled}");
    assert_eq!(rolled["PhysicalResourceId"], json!(ami));
    let reason = rolled["Reason"].as_str().unwrap();
    assert!(
        reason.contains("Stopped the build of request req-2"),
        "{reason}"
    );
    audit.assert_only(&[&ami]).await;
    assert_eq!(in_flight.end(Duration::from_secs(30)).await, None);
    audit.assert_only(&[&ami]).await;
    eprintln!("rollback of a cancelled Update answered after {took:?}");
    report::record(
        "lifecycle-cancel-02",
        SECTION,
        "An Update cancelled while it rebuilds, then CloudFormation's rollback Update",
        "the rollback stops the rebuild, removes its builder, returns the previous AMI; the cancelled Update answers nothing",
        Some(audit.leftovers(&[&ami]).await.len()),
    );
}

/// Deliveries after the answer: a hand-over payload minutes old, delivered again after the build
/// finished, and the original Create delivered again. Each sends the recorded answer again and
/// touches nothing: the AMI and its snapshots stay, nothing is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_deliveries_repeat_the_answer_and_touch_nothing() {
    let stack = "late";
    let (local, aws, audit) = on_local_aws(stack).await;
    let mut create = event(
        "Create",
        stack,
        "req-late",
        None,
        properties(json!([{"Name": "a", "Commands": ["echo a > /etc/a"]}])),
    );
    let mut catcher = ResponseCatcher::start().await.unwrap();
    create["ResponseURL"] = json!(catcher.url);
    let sink = HttpSink::with_retries(3, Duration::from_millis(50));
    let scheduler = InProcessScheduler::default();
    let every_state = || Limits {
        hand_over_every_state: true,
        ..Limits::default()
    };
    // Follow the build through its hand-overs, keeping every payload.
    let mut payloads = Vec::new();
    let mut next = create.clone();
    let answered = loop {
        match handle(next, &aws, &sink, &scheduler, every_state())
            .await
            .unwrap()
        {
            Handled::HandedOver { .. } => {
                let payload = scheduler.take().unwrap();
                payloads.push(payload.clone());
                next = serde_json::from_str(&payload).unwrap();
            }
            Handled::Answered(response) => break response,
            other => panic!("{other:?}"),
        }
    };
    let first: Value =
        serde_json::from_slice(&catcher.next(Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(first["Status"], "SUCCESS", "{first}");
    let ami = answered.physical_resource_id.clone();
    assert!(payloads.len() >= 5, "{} hand-overs", payloads.len());

    // Every stale payload again (the builder is long terminated), then the Create itself.
    let mut late: Vec<Value> = payloads
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    late.push(create);
    for delivery in late {
        let handled = handle(delivery, &aws, &sink, &scheduler, Limits::default())
            .await
            .unwrap();
        let Handled::Repeated(response) = handled else {
            panic!("{handled:?}")
        };
        assert_eq!(response.physical_resource_id, ami);
        let again: Value =
            serde_json::from_slice(&catcher.next(Duration::from_secs(5)).await.unwrap()).unwrap();
        assert_eq!(again["Status"], "SUCCESS");
        assert_eq!(again["PhysicalResourceId"], json!(ami));
        assert_eq!(again["Data"], first["Data"]);
        assert!(scheduler.take().is_none(), "no hand-over");
    }
    audit.assert_only(&[&ami]).await;
    assert_eq!(
        audit.instances().await.len(),
        1,
        "one builder ever launched"
    );
    assert_eq!(leases(&local).await, Vec::<String>::new(), "leases left");
    report::record(
        "lifecycle-late-01",
        SECTION,
        "Every hand-over payload of a finished build delivered again, then the Create itself",
        "each repeats the recorded SUCCESS; the AMI and its snapshots stay, nothing launched or removed",
        Some(audit.leftovers(&[&ami]).await.len()),
    );
}

/// CloudFormation creates the resource again after a failed Create (a new RequestId), and sends
/// the Delete of the failed one while or after the new Create runs: the Delete of the failed one
/// touches nothing of the new build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_after_a_failed_create_is_untouched_by_the_failed_ones_delete() {
    let stack = "recreate";
    let (_local, aws, audit) = on_local_aws(stack).await;
    let failed = invoke(
        &aws,
        event(
            "Create",
            stack,
            "req-fails",
            None,
            properties(json!([{"Name": "bad", "Commands": ["exit 3"]}])),
        ),
    )
    .await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    let marker = failed["PhysicalResourceId"].as_str().unwrap().to_owned();
    audit.assert_only(&[]).await;

    let again = start(
        &aws,
        event(
            "Create",
            stack,
            "req-again",
            None,
            properties(json!([{"Name": "ok", "Commands": ["sleep 3"]}])),
        ),
    )
    .await;
    until(Duration::from_secs(60), "the new builder", || async {
        !audit.live_instances().await.is_empty()
    })
    .await;
    let deleted = invoke(
        &aws,
        event("Delete", stack, "req-del", Some(&marker), json!({})),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    let created = again.end(Duration::from_secs(120)).await.expect("answered");
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    // The failed Create's Delete delivered again, late: still nothing touched.
    let late = invoke(
        &aws,
        event("Delete", stack, "req-del", Some(&marker), json!({})),
    )
    .await;
    assert_eq!(late["Status"], "SUCCESS", "{late}");
    audit.assert_only(&[&ami]).await;
    report::record(
        "lifecycle-recreate-01",
        SECTION,
        "A Create after a failed Create of the same logical id, with the failed one's Delete sent during the new build and again after it",
        "the new Create builds and answers SUCCESS; the Deletes touch nothing of it",
        Some(audit.leftovers(&[&ami]).await.len()),
    );
}

/// Lambda runs the Delete of a cancelled Create before the Create itself: the Create, issued
/// before the Delete, builds nothing and answers nothing; a Create issued after it (the resource
/// added again by a later stack update) builds as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_delivered_after_the_delete_that_cancelled_it_builds_nothing() {
    let stack = "reordered";
    let (_local, aws, audit) = on_local_aws(stack).await;
    let steps = json!([{"Name": "a", "Commands": ["echo a > /etc/a"]}]);
    let delete = event(
        "Delete",
        stack,
        "req-delete",
        Some("reordered-Ami-8XW2L5C0QJ3N"),
        properties(steps.clone()),
    );
    let deleted = start_issued(&aws, delete, Some("20261125T120005Z"))
        .await
        .end(Duration::from_secs(30))
        .await
        .expect("the Delete answers");
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");

    let create = event(
        "Create",
        stack,
        "req-create",
        None,
        properties(steps.clone()),
    );
    let late = start_issued(&aws, create, Some("20261125T120001Z")).await;
    assert_eq!(late.end(Duration::from_secs(30)).await, None, "no answer");
    assert_eq!(audit.instances().await, vec![], "nothing launched");

    let again = event("Create", stack, "req-again", None, properties(steps));
    let created = start_issued(&aws, again, Some("20261125T121000Z"))
        .await
        .end(Duration::from_secs(120))
        .await
        .expect("answered");
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    audit.assert_only(&[&ami]).await;
    report::record(
        "lifecycle-cancel-03",
        SECTION,
        "The Delete of a cancelled Create run before the Create itself; later, a Create issued after that Delete",
        "the earlier Create launches nothing and answers nothing; the later one builds and answers SUCCESS",
        Some(audit.leftovers(&[&ami]).await.len()),
    );
}

/// Lambda delivers one hand-over payload twice at the same moment: one delivery succeeds the
/// previous invocation's lease and carries the build on, the other finds it taken and leaves the
/// build to it, so the step is sent once and one image is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_delivered_twice_at_once_is_continued_once() {
    let stack = "twice";
    let (local, aws, audit) = on_local_aws(stack).await;
    let mut create = event(
        "Create",
        stack,
        "req-twice",
        None,
        properties(json!([
            {"Name": "count", "Commands": ["echo run >> /var/tmp/step-runs", "sleep 2"]},
            {"Name": "once", "Commands": ["test \"$(wc -l < /var/tmp/step-runs)\" -eq 1"]}
        ])),
    );
    let mut catcher = ResponseCatcher::start().await.unwrap();
    create["ResponseURL"] = json!(catcher.url);
    let sink = HttpSink::with_retries(3, Duration::from_millis(50));
    let scheduler = InProcessScheduler::default();
    // Invocations of two minutes: the delivery that finds the lease taken cannot wait out its
    // holder (5 minutes) and leaves the build at once.
    let limits = || Limits {
        hand_over_every_state: true,
        ..Limits::before_deadline(Duration::from_secs(120))
    };
    let mut next = create;
    let mut duplicated = false;
    let answered = loop {
        let is_step = next.to_string().contains("StartStep");
        if is_step && !duplicated {
            duplicated = true;
            let (one, two) = tokio::join!(
                handle(next.clone(), &aws, &sink, &scheduler, limits()),
                handle(next.clone(), &aws, &sink, &scheduler, limits()),
            );
            let outcomes = [one.unwrap(), two.unwrap()];
            let yielded = outcomes
                .iter()
                .filter(|h| matches!(h, Handled::Yielded))
                .count();
            assert_eq!(yielded, 1, "one delivery leaves the build: {outcomes:?}");
            let payload = scheduler.take().expect("the other handed the build on");
            assert!(scheduler.take().is_none(), "one hand-over, not two");
            next = serde_json::from_str(&payload).unwrap();
            continue;
        }
        match handle(next, &aws, &sink, &scheduler, limits())
            .await
            .unwrap()
        {
            Handled::HandedOver { .. } => {
                next = serde_json::from_str(&scheduler.take().unwrap()).unwrap();
            }
            Handled::Answered(response) => break response,
            other => panic!("{other:?}"),
        }
    };
    assert!(duplicated, "the build reached a step");
    let body: Value =
        serde_json::from_slice(&catcher.next(Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert!(catcher.try_next().is_none(), "one answer");
    let ami = answered.physical_resource_id;
    audit.assert_only(&[&ami]).await;
    assert_eq!(audit.instances().await.len(), 1, "one builder");
    assert_eq!(leases(&local).await, Vec::<String>::new(), "leases left");
    report::record(
        "crash-twice-01",
        "Crashes and duplicate deliveries",
        "A hand-over payload delivered twice at the same moment (before its step is sent)",
        "one delivery continues, the other leaves the build to it; the step runs once, one image, one answer",
        Some(audit.leftovers(&[&ami]).await.len()),
    );
}

/// A lease that outlived its request's record (the answer's lease release failed, and the record
/// was swept a day later): a later Update takes that request for one in flight, but never
/// removes the AMI CloudFormation holds for the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_never_costs_the_current_image() {
    use ecs_ami::cfn::Identity;
    use ecs_ami::engine::{lease, ledger, time};
    let stack = "stale-lease";
    let (local, aws, audit) = on_local_aws(stack).await;
    let first = properties(json!([{"Name": "a", "Commands": ["echo a > /etc/a"]}]));
    let created = invoke(&aws, event("Create", stack, "req-1", None, first.clone())).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let ami = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    let req1 = Identity {
        stack_id: stack_id(stack),
        logical_id: "Ami".into(),
        request_id: "req-1".into(),
    };
    let ssm = aws_sdk_ssm::Client::new(&local.sdk_config().await);
    ssm.delete_parameter()
        .name(ledger::path(&req1))
        .send()
        .await
        .unwrap();
    let expired = time::now_ms() - 1000;
    ssm.put_parameter()
        .name(format!("{}/1", lease::path(&req1)))
        .value(format!("token {expired} req-1"))
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();

    let mut retag = event(
        "Update",
        stack,
        "req-2",
        Some(&ami),
        properties(json!([{"Name": "a", "Commands": ["echo a > /etc/a"]}])),
    );
    retag["ResourceProperties"]["Tags"] = json!({"team": "core"});
    retag["OldResourceProperties"] = first;
    let updated = invoke(&aws, retag).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(updated["PhysicalResourceId"], json!(ami));
    assert!(
        updated["Reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Stopped the build of request req-1"),
        "{updated}"
    );
    audit.assert_only(&[&ami]).await;
    assert!(audit.image(&ami).await.is_some(), "the current AMI stays");
    assert_eq!(leases(&local).await, Vec::<String>::new(), "leases left");
    report::record(
        "lifecycle-stale-01",
        SECTION,
        "A lease left by an answered Create whose record is gone, then an Update of the resource",
        "the Update takes it for a build in flight, removes only the lease and what is not the current AMI; the AMI stays",
        Some(audit.leftovers(&[&ami]).await.len()),
    );
}

/// A Create cancelled while it waits for its copy in another region (`Regions`): the Delete that
/// follows stops it, and the copy goes with the AMI, in its own region, before the Delete answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_leaves_no_copy_in_any_region() {
    const WEST: &str = "us-west-2";
    // Copies stay pending for 60 s: the Delete lands while the build waits for one.
    let local = LocalAws::start_with(&[("ECS_AMI_EMULATOR_COPY_DELAY", "60")]).await;
    local
        .set_role(json!({"parameters": {"AmiCopyRegions": WEST}}))
        .await;
    let aws = local.aws().await;
    let stack = "cancel-copy";
    let home = Audit {
        ec2: local.ec2().await,
        stack_id: stack_id(stack),
    };
    let west = Audit {
        ec2: local.ec2_in(WEST).await,
        stack_id: stack_id(stack),
    };
    let mut properties = properties(json!([{"Name": "quick", "Commands": ["true"]}]));
    properties["Regions"] = json!([{"Region": WEST}]);
    let create = start(
        &aws,
        event("Create", stack, "req-create", None, properties.clone()),
    )
    .await;
    until(Duration::from_secs(60), "a copy being made", || async {
        !west.images().await.is_empty()
    })
    .await;
    // CloudFormation's Delete carries the resource's properties.
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            stack,
            "req-delete",
            Some(&format!("{stack}-Ami-1QX7R2M9ZK4T")),
            properties,
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    let reason = deleted["Reason"].as_str().unwrap();
    assert!(
        reason.contains("Stopped the build of request req-create"),
        "{reason}"
    );
    home.assert_only(&[]).await;
    assert_eq!(
        west.leftovers(&[]).await,
        Vec::<String>::new(),
        "left in {WEST}"
    );
    assert_eq!(create.end(Duration::from_secs(30)).await, None);
    let mut left = home.leftovers(&[]).await;
    left.extend(west.leftovers(&[]).await);
    report::record_clean(
        "lifecycle-cancel-copy",
        SECTION,
        "A Create with Regions cancelled by CloudFormation while it waits for its copy in another region; then the Delete, with the Create's properties",
        "the Delete stops the build; the AMI, its snapshots, and the copy and its snapshots in the other region are removed before it answers SUCCESS; the cancelled Create answers nothing",
        &left,
    );
}
