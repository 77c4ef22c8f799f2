//! The product's reason to exist, end to end on the local AWS: the image of `cfn/ecs-ami.yaml`
//! built from that template's own resource, then `cfn/ecs-cluster.yaml` deployed into the local
//! CloudFormation on it.
//!
//! The builder here is an overlay of this (Debian) machine, not Amazon Linux 2023, and has no
//! EBS device, systemd, dnf or Docker. One step is put in front of the template's steps: it
//! installs stand-ins for exactly those commands in /usr/local/sbin (first on the PATH), each
//! recording its arguments and answering as Amazon Linux 2023 would. Every step of the template
//! then runs unchanged, and the test reads what they did from the builder's file system.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use common::{LocalAws, PROFILE, event, invoke};
use serde_json::{Value, json};

const STACK: &str = "ecs-image";
/// The template's TestCluster, as the local ECS names it.
const TEST_CLUSTER: &str = "ecs-image-TestCluster-A1B2C3";

/// The resolved properties of a template's resource, by tests/templates/cfn_template.py.
fn template_properties(template: &str, resource: &str, args: &[&str]) -> Value {
    let mut all = vec!["properties", template, resource, "--stack-name", STACK];
    all.extend_from_slice(args);
    common::cfn_template(&all)
}

/// Stand-ins for the commands an Amazon Linux 2023 builder has and this machine's overlay has
/// not. Each appends `name args` to /var/log/stand-ins.log. They are in the image, so the test
/// instance has them too: systemctl keeps which units are enabled and active (and starting the
/// ECS agent has the local AWS register the instance in its ecs.config cluster), timedatectl the
/// time zone, dnf what it installed (rpm -q answers from it), and curl answers the ECS agent's
/// introspection API while the agent runs.
fn stand_ins_step() -> Value {
    let answers: [(&str, &str); 15] = [
        ("lsblk", "exit 0"),
        // No file system labelled docker yet, so the step must make one.
        ("blkid", "exit 2"),
        ("mkfs.ext4", "exit 0"),
        ("mountpoint", "exit 1"),
        ("mount", "exit 0"),
        ("findmnt", FINDMNT),
        ("systemctl", SYSTEMCTL),
        ("timedatectl", TIMEDATECTL),
        (
            "chronyc",
            "echo '^* 169.254.169.123               3   4   377     5   +12us[  +15us] +/-  310us'",
        ),
        ("dnf", DNF),
        ("rpm", RPM),
        ("docker", "echo 'Total reclaimed space: 0B'"),
        ("curl", CURL),
        ("amazon-cloudwatch-agent-ctl", "exit 0"),
        ("cloud-init", CLOUD_INIT),
    ];
    let mut commands = vec![json!("mkdir -p /usr/local/sbin /var/log")];
    for (name, answer) in answers {
        commands.push(json!(format!(
            "printf '#!/bin/bash\\necho \"{name} $*\" >> /var/log/stand-ins.log\\n%s\\n' {} > /usr/local/sbin/{name}",
            shell_quote(answer)
        )));
        commands.push(json!(format!("chmod 755 /usr/local/sbin/{name}")));
    }
    json!({"Name": "stand-ins", "Commands": commands})
}

const SYSTEMCTL: &str = "state=/var/lib/stand-ins/units\nmkdir -p \"$state/enabled\" \"$state/active\"\ncmd=\"$1\"; shift\nnow=\"\"\n[ \"${1:-}\" = --now ] && { now=1; shift; }\n[ \"${1:-}\" = --no-block ] && shift\ncode=0\nfor unit in \"$@\"; do\n  u=\"${unit%.service}\"\n  case \"$cmd\" in\n    enable) touch \"$state/enabled/$u\"; [ -z \"$now\" ] || touch \"$state/active/$u\" ;;\n    disable) rm -f \"$state/enabled/$u\" ;;\n    start|restart) touch \"$state/active/$u\" ;;\n    stop) rm -f \"$state/active/$u\" ;;\n    is-enabled) if [ -e \"$state/enabled/$u\" ]; then echo enabled; else echo disabled; code=1; fi ;;\n    is-active) if [ -e \"$state/active/$u\" ]; then echo active; else echo inactive; code=3; fi ;;\n  esac\n  # The ECS agent starting: the local AWS registers the instance in its ecs.config cluster.\n  if [ \"$u\" = ecs ] && [ -e \"$state/active/ecs\" ] && { [ \"$cmd\" = start ] || [ \"$cmd\" = restart ] || [ -n \"$now\" ]; }; then\n    curl -fsS -X POST \"$ECS_AMI_LOCAL_AWS/ecs-ami-local/ecs/agent-started\" -d \"{\\\"instance\\\": \\\"$ECS_AMI_INSTANCE_ID\\\"}\" >/dev/null || code=1\n  fi\ndone\nexit \"$code\"";
const CURL: &str = "case \"$*\" in\n  *localhost:51678/v1/metadata*)\n    # The ECS agent's introspection API, once the agent runs.\n    [ -e /var/lib/stand-ins/units/active/ecs ] || exit 7\n    cluster=\"$(sed -n 's/^ECS_CLUSTER=//p' /etc/ecs/ecs.config | tail -n 1)\"\n    printf '{\"Cluster\": \"%s\", \"Version\": \"Amazon ECS Agent - v1.89.2\"}\\n' \"$cluster\" ;;\n  *) exec /usr/bin/curl \"$@\" ;;\nesac";
const TIMEDATECTL: &str = "mkdir -p /var/lib/stand-ins\ncase \"$1\" in\n  set-timezone) echo \"$2\" > /var/lib/stand-ins/timezone ;;\n  show) cat /var/lib/stand-ins/timezone 2>/dev/null || echo UTC ;;\nesac";
const FINDMNT: &str = "last=\"${!#}\"\ncase \"$*\" in\n  *FSTYPE,OPTIONS*)\n    grep -Eq '^LABEL=docker[[:space:]]+/data[[:space:]]+ext4[[:space:]]+defaults,noatime' /etc/fstab && [ \"$last\" = /data ] || exit 1\n    echo 'ext4   rw,noatime' ;;\n  *) echo \"$last (stand-in)\" ;;\nesac";
const RPM: &str = "case \"$*\" in\n  *--queryformat*' docker') printf 25.0.8 ;;\n  *--queryformat*' ecs-init') printf 1.89.2 ;;\n  '-q '*)\n    shift\n    installed=\" docker ecs-init $(tr '\\n' ' ' < /var/lib/stand-ins/rpms 2>/dev/null) \"\n    for package in \"$@\"; do\n      case \"$installed\" in *\" $package \"*) echo \"$package-1.0-1.amzn2023\" ;; *) echo \"package $package is not installed\"; exit 1 ;; esac\n    done ;;\n  *) exit 1 ;;\nesac";
/// `cloud-init status [--wait]`: how the local AWS's run of the user data ended (it has, by the
/// time SSM reports the instance Online there).
const CLOUD_INIT: &str = "result=/var/lib/cloud/data/result.json\nif [ -e \"$result\" ] && ! grep -q '\"errors\": \\[\\]' \"$result\"; then echo 'status: error'; exit 1; fi\necho 'status: done'";
const DNF: &str = "if [ \"$1\" = -y ] && [ \"$2\" = install ]; then\n  shift 2\n  mkdir -p /var/lib/stand-ins\n  printf '%s\\n' \"$@\" >> /var/lib/stand-ins/rpms\nfi";

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_image_builds_from_its_template_and_a_cluster_runs_on_it() {
    let local = LocalAws::start().await;
    let aws = local.aws().await;
    let ec2 = local.ec2().await;
    let config = local.sdk_config().await;
    let cloudformation = aws_sdk_cloudformation::Client::new(&config);

    // 1. The image, from cfn/ecs-ami.yaml's own resource (arm64, as most ECS fleets now are),
    //    with the template's acceptance cluster in the local ECS.
    aws_sdk_ecs::Client::new(&config)
        .create_cluster()
        .cluster_name(TEST_CLUSTER)
        .send()
        .await
        .unwrap();
    let mut properties = template_properties(
        "cfn/ecs-ami.yaml",
        "Ami",
        &[
            "--param",
            "Architecture=arm64",
            "--param",
            &format!("TestCluster={TEST_CLUSTER}"),
            "--import",
            "ecs-ami-ServiceToken=arn:aws:lambda:us-east-1:123456789012:function:ecs-ami",
            "--import",
            &format!("ecs-ami-BuilderInstanceProfile={PROFILE}"),
            "--import",
            "ecs-ami-TestInstanceProfile=ecs-ami-test-instance",
        ],
    );
    let template_steps = properties["Steps"].as_array().unwrap().clone();
    let mut steps = vec![stand_ins_step()];
    steps.extend(template_steps.iter().cloned());
    properties["Steps"] = json!(steps);
    let created = invoke(
        &aws,
        event("Create", STACK, "req-ecs-image", None, properties.clone()),
    )
    .await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    let image_id = created["PhysicalResourceId"].as_str().unwrap().to_owned();
    println!(
        "built {image_id} from cfn/ecs-ami.yaml ({} template steps): {}",
        template_steps.len(),
        created["Data"]
    );

    // The image maps the template's data volume with a snapshot of its own, as EC2's CreateImage
    // snapshots every EBS volume of the instance; the test instance launched from it under the
    // role as written (the launch names the devices, never their snapshots: RunInstances would
    // authorize a named snapshot, and the role grants it on none).
    let image = ec2
        .describe_images()
        .image_ids(&image_id)
        .send()
        .await
        .unwrap()
        .images()[0]
        .clone();
    let mapped: BTreeMap<&str, &str> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| Some((m.device_name()?, m.ebs()?.snapshot_id()?)))
        .collect();
    let data_devices: Vec<&str> = properties["BlockDeviceMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["DeviceName"].as_str().unwrap())
        .collect();
    assert!(!data_devices.is_empty());
    for device in &data_devices {
        assert!(mapped.contains_key(device), "{device} in {mapped:?}");
    }
    let decisions = local.iam_decisions(false).await;
    let launches: Vec<&Value> = decisions["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["operation"] == "EC2.RunInstances")
        .collect();
    assert!(launches.len() >= 2, "the builder and the test instance");
    for launch in launches {
        assert_eq!(launch["decision"], "Allowed", "{launch:#}");
        assert!(!launch.to_string().contains(":snapshot/"), "{launch:#}");
    }

    // It passed the template's Tests on a test instance launched from it, which joined the
    // acceptance cluster.
    assert!(created["Data"]["TestedAt"].is_string(), "{created}");
    let test_instance = created["Data"]["TestInstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let console = local
        .ec2()
        .await
        .get_console_output()
        .instance_id(&test_instance)
        .latest(true)
        .send()
        .await
        .unwrap();
    use base64::Engine;
    let console = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(console.output().unwrap_or_default())
            .unwrap(),
    )
    .unwrap();
    println!("test instance console:\n{console}");
    // The user data configured the instance and started the agent without waiting for it
    // (the agent starts after cloud-init); the test waited for it to join (EcsCluster).
    assert!(
        console.contains("ecs-first-run: configured; not waiting for the ECS agent (--wait 0)"),
        "{console}"
    );
    assert!(
        console.contains("user data finished with exit code 0"),
        "{console}"
    );

    // One reference check made to fail (it expects a time zone the image does not have): the
    // image is refused and removed.
    let mut broken = properties.clone();
    let time_check = broken["Tests"]["Steps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["Name"] == "time")
        .unwrap();
    time_check["Environment"]["TIME_ZONE"] = json!("Europe/Paris");
    let refused = invoke(
        &aws,
        event("Create", "ecs-image-broken", "req-broken", None, broken),
    )
    .await;
    assert_eq!(refused["Status"], "FAILED", "{refused}");
    let reason = refused["Reason"].as_str().unwrap();
    assert!(
        reason.contains("failed while testing the image: test step \"time\" (3 of 7) exited 1"),
        "{reason}"
    );
    let broken_audit = common::audit::Audit {
        ec2: ec2.clone(),
        stack_id: common::stack_id("ecs-image-broken"),
    };
    common::report::record_clean(
        "tests-reference-checks",
        "Unusable inputs found at build time",
        "cfn/ecs-ami.yaml's own Tests (the reference checks: /data ext4 noatime by label, the Docker volumes bind mount, time zone and Amazon Time Sync, no upgrades at boot, Docker and ECS disabled and stopped as imaged, the first-run script, the packages; and the ECS acceptance test) on its image, then with the time zone check made to expect another zone",
        "the image passes: its test instance boots with user data running the first-run script and joins the template's TestCluster; the broken one is refused, FAILED naming the time test step, its AMI and snapshots removed",
        &broken_audit.leftovers(&[]).await,
    );

    // The versions were read on the builder: attributes and tags.
    assert_eq!(created["Data"]["DockerVersion"], "25.0.8");
    assert_eq!(created["Data"]["EcsAgentVersion"], "1.89.2");
    let tags = tags_of(image.tags());
    assert_eq!(tags["docker-version"], "25.0.8");
    assert_eq!(tags["ecs-agent-version"], "1.89.2");
    assert_eq!(
        Some(&tags["source-ami"]),
        created["Data"]["SourceImageId"]
            .as_str()
            .map(str::to_owned)
            .as_ref()
    );
    assert_eq!(tags["Name"], format!("{STACK}-ecs"));
    assert_eq!(image.architecture().unwrap().as_str(), "arm64");

    // What the steps did to the builder, from its own file system.
    let builder = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:ecs-ami:request-id")
                .values("req-ecs-image")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .clone();
    assert_eq!(
        builder.instance_type().unwrap().as_str(),
        "t4g.medium",
        "arm64 source, arm64 builder"
    );
    let root = local
        .state_dir
        .path()
        .join("instances")
        .join(builder.instance_id().unwrap())
        .join("upper");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path} on the builder: {e}"))
    };
    let calls = read("/var/log/stand-ins.log");
    println!("stand-in calls on the builder:\n{calls}");
    for expected in [
        "mkfs.ext4 -q -L docker /dev/xvdb",
        "mount /data",
        "mount /var/lib/docker/volumes",
        "timedatectl set-timezone US/Eastern",
        "systemctl restart chronyd.service",
        "dnf -y upgrade --releasever=latest --exclude=docker --exclude=ecs-init --exclude=containerd --exclude=runc",
        "dnf -y install aws-cfn-bootstrap amazon-cloudwatch-agent jq rsyslog",
        "rpm -q --queryformat %{VERSION} docker",
        "systemctl stop ecs.service",
        "docker system prune --force --volumes",
        "systemctl disable ecs.service docker.service docker.socket",
    ] {
        assert!(calls.lines().any(|l| l == expected), "{expected:?} not run");
    }
    let fstab = read("/etc/fstab");
    assert!(fstab.contains("LABEL=docker /data ext4 defaults,noatime,nofail 0 2\n"));
    assert!(fstab.contains("/data/docker/volumes /var/lib/docker/volumes none bind"));
    assert!(read("/etc/chrony.d/amazon-time-sync.sources").starts_with("server 169.254.169.123"));
    assert!(
        read("/etc/cloud/cloud.cfg.d/90-ecs-ami-no-upgrades.cfg").contains("repo_upgrade: none")
    );
    let first_run = template_steps
        .iter()
        .find(|s| s["Name"] == "first-run-script")
        .unwrap();
    assert_eq!(
        read("/usr/local/bin/ecs-first-run"),
        first_run["Content"].as_str().unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("usr/local/bin/ecs-first-run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // 2. The cluster, deployed into the local CloudFormation on that image.
    let vpc = ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_owned();
    let subnets: Vec<String> = ec2
        .describe_subnets()
        .send()
        .await
        .unwrap()
        .subnets()
        .iter()
        .take(2)
        .map(|s| s.subnet_id().unwrap().to_owned())
        .collect();
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("cfn/ecs-cluster.yaml"))
            .unwrap();
    // The cluster's parameters, on a given image.
    let parameters = |image: &str| {
        [
            ("ImageId", image.to_owned()),
            ("VpcId", vpc.clone()),
            ("Subnets", subnets.join(",")),
            ("InstanceType", "t4g.medium".to_owned()),
            ("ProxyUrl", "http://proxy.internal:3128".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| {
            Parameter::builder()
                .parameter_key(key)
                .parameter_value(value)
                .build()
        })
        .collect::<Vec<_>>()
    };
    cloudformation
        .create_stack()
        .stack_name("web")
        .template_body(&template)
        .capabilities(Capability::CapabilityIam)
        .set_parameters(Some(parameters(&image_id)))
        .send()
        .await
        .unwrap();
    let stack = wait_for_stack(&cloudformation, "web").await;
    assert_eq!(
        stack.stack_status(),
        Some(&StackStatus::CreateComplete),
        "{:?}",
        stack.stack_status_reason()
    );
    let output = |key: &str| {
        stack
            .outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .unwrap_or_else(|| panic!("output {key}"))
            .to_owned()
    };
    let launch_template = output("LaunchTemplateId");
    let cluster = output("ClusterName");
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(&launch_template)
        .send()
        .await
        .unwrap();
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    assert_eq!(
        data.image_id(),
        Some(image_id.as_str()),
        "the launch template carries the AMI"
    );
    assert_eq!(
        data.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    let user_data = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.user_data().unwrap())
            .unwrap(),
    )
    .unwrap();
    println!("user data:\n{user_data}");
    assert!(user_data.contains(&format!(
        "/usr/local/bin/ecs-first-run --cluster '{cluster}' --stack 'web'"
    )));
    assert!(user_data.contains("--group 'web-ecs' --region 'us-east-1' --proxy \"$proxy\""));
    assert!(user_data.contains("proxy='http://proxy.internal:3128'"));
    assert!(user_data.contains("cfn-signal --exit-code \"$1\""));
    // The wait for the agent runs after cloud-init (the agent starts only then).
    assert!(user_data.contains("first_run --wait 0 || status=$?"));
    assert!(user_data.contains(
        "systemd-run --no-block --unit ecs-first-run-signal --property After=cloud-final.service"
    ));
    // The user data passes shellcheck as deployed, not only as written.
    let check = Command::new("shellcheck")
        .args(["--shell=bash", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(user_data.as_bytes())?;
            child.wait_with_output()
        })
        .expect("shellcheck runs (scripts/test installs it)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // The group's instances run the image (the test instance is terminated).
    let running = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("image-id")
                .values(&image_id)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instances = running
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .count();
    assert_eq!(instances, 2, "DesiredCapacity instances from the AMI");

    // 3. A new image (here the source AMI stands in for a rebuilt one) reaches the launch
    //    template as a new version. The group follows `LatestVersionNumber` with a rolling
    //    update on AWS; the local CloudFormation updates only resources whose own template text
    //    changed, so it leaves the group on version 1 (tests/templates checks the reference).
    let newer = created["Data"]["SourceImageId"].as_str().unwrap();
    cloudformation
        .update_stack()
        .stack_name("web")
        .template_body(&template)
        .capabilities(Capability::CapabilityIam)
        .set_parameters(Some(parameters(newer)))
        .send()
        .await
        .unwrap();
    let updated = wait_for_stack(&cloudformation, "web").await;
    assert_eq!(
        updated.stack_status(),
        Some(&StackStatus::UpdateComplete),
        "{:?}",
        updated.stack_status_reason()
    );
    let latest = ec2
        .describe_launch_template_versions()
        .launch_template_id(&launch_template)
        .versions("$Latest")
        .send()
        .await
        .unwrap();
    let latest = &latest.launch_template_versions()[0];
    println!(
        "after the image changed: launch template version {:?}",
        latest.version_number()
    );
    assert_eq!(latest.version_number(), Some(2));
    assert_eq!(
        latest.launch_template_data().and_then(|d| d.image_id()),
        Some(newer)
    );

    // 4. Tear down: the stack, then the image (CloudFormation's Delete), and nothing is left.
    cloudformation
        .delete_stack()
        .stack_name("web")
        .send()
        .await
        .unwrap();
    let deleted = invoke(
        &aws,
        event(
            "Delete",
            STACK,
            "req-ecs-image-delete",
            Some(&image_id),
            properties,
        ),
    )
    .await;
    assert_eq!(deleted["Status"], "SUCCESS", "{deleted}");
    let left = ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:ecs-ami:logical-id")
                .values("Ami")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(left.images().is_empty(), "{:?}", left.images());
}

async fn wait_for_stack(
    client: &aws_sdk_cloudformation::Client,
    name: &str,
) -> aws_sdk_cloudformation::types::Stack {
    for _ in 0..120 {
        let out = client
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .unwrap();
        let stack = out.stacks()[0].clone();
        if !stack
            .stack_status()
            .map(|s| s.as_str().ends_with("IN_PROGRESS"))
            .unwrap_or(true)
        {
            return stack;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("stack {name} still in progress after 30 s");
}
