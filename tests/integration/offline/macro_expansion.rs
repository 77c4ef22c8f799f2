//! The EcsAmi macro (`ecs_ami::cfn::transform`) on the shipped `cfn/ecs-ami.yaml`, as
//! CloudFormation invokes a macro (the user guide's "Perform custom processing on CloudFormation
//! templates with template macros": the event's `fragment` is the whole template when the macro
//! is in its `Transform`, `templateParameterValues` the stack's parameters, and the answer
//! `{requestId, status, fragment}`). A long build expands into the four resources, and the
//! expansion is a template cfn-lint accepts with the product's rule (cfn/lint).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cfn/ecs-ami.yaml` as JSON, as CloudFormation hands it to the macro.
fn shipped_template() -> Value {
    crate::common::cfn_template(&["json", "cfn/ecs-ami.yaml"])
}

fn macro_event(template: &Value, minutes: &str) -> Value {
    json!({
        "region": "us-east-1",
        "accountId": "123456789012",
        "fragment": template,
        "transformId": "123456789012::EcsAmi",
        "params": {},
        "requestId": "5d2b4a2e-change-set-1",
        "templateParameterValues": {
            "EcsAmiStack": "ecs-ami", "Architecture": "x86_64", "TimeZone": "US/Eastern",
            "DockerVolumeSize": "20", "SubnetId": "", "SecurityGroupId": "",
            "BuildTimeoutMinutes": minutes,
        },
    })
}

#[test]
fn the_shipped_template_expands_into_one_cfn_lint_accepts() {
    let template = shipped_template();
    assert_eq!(
        template["Transform"], "EcsAmi",
        "cfn/ecs-ami.yaml names the macro"
    );

    // The default 55 minutes: answered by the resource itself, the template unchanged.
    let short = ecs_ami::cfn::transform::respond(&macro_event(&template, "55"));
    assert_eq!(short["status"], "success", "{short}");
    assert_eq!(short["fragment"], template);

    let long = ecs_ami::cfn::transform::respond(&macro_event(&template, "600"));
    assert_eq!(long["status"], "success", "{long}");
    assert_eq!(long["requestId"], "5d2b4a2e-change-set-1");
    let mut expanded = long["fragment"].clone();
    let resources = expanded["Resources"].as_object().unwrap();
    let named = |prefix: &str| {
        resources
            .iter()
            .filter(|(id, _)| id.starts_with(prefix) && id.len() > prefix.len())
            .map(|(id, resource)| (id.clone(), resource.clone()))
            .collect::<Vec<_>>()
    };
    let [(wait_id, wait)] = named("AmiWait").try_into().unwrap();
    let [(handle_id, handle)] = named("AmiHandle").try_into().unwrap();
    assert_eq!(wait["Type"], "AWS::CloudFormation::WaitCondition");
    assert_eq!(wait["Properties"]["Timeout"], "36600", "(600 + 10) x 60 s");
    assert_eq!(wait["Properties"]["Handle"], json!({"Ref": handle_id}));
    assert_eq!(wait["DependsOn"], "AmiBuild");
    assert_eq!(handle["Type"], "AWS::CloudFormation::WaitConditionHandle");
    let build = &resources["AmiBuild"];
    assert_eq!(build["Type"], "Custom::EcsAmi");
    assert_eq!(build["Properties"]["SignalUrl"], json!({"Ref": handle_id}));
    assert_eq!(build["Properties"]["ImageResource"], "Ami");
    let ami = &resources["Ami"];
    assert_eq!(
        ami["Properties"]["Signal"],
        json!({"Fn::GetAtt": [wait_id, "Data"]})
    );
    // Everything else the template declares is as it was, and what refers to Ami still does.
    for (id, resource) in template["Resources"].as_object().unwrap() {
        if id != "Ami" {
            assert_eq!(&resources[id], resource, "{id}");
        }
    }
    assert_eq!(expanded["Outputs"], template["Outputs"]);

    // CloudFormation deploys the processed template, without the transform it ran.
    expanded.as_object_mut().unwrap().remove("Transform");
    let path = repo().join("target/tmp/ecs-ami-expanded.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&expanded).unwrap()).unwrap();
    let lint = Command::new("cfn-lint")
        .args(["--append-rules", "cfn/lint", "--"])
        .arg(&path)
        .current_dir(repo())
        .output()
        .expect("cfn-lint runs (scripts/test installs it)");
    assert!(
        lint.status.success(),
        "cfn-lint refused the expansion:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // A value the macro cannot take is refused before CloudFormation creates anything.
    let refused = ecs_ami::cfn::transform::respond(&macro_event(&template, "711"));
    assert_eq!(refused["status"], "failure");
    assert!(
        refused["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("Ami: TimeoutMinutes 711"),
        "{refused}"
    );
}
