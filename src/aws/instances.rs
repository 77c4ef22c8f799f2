//! The builder instance and what it runs in: instance types, subnets, security groups, launch,
//! state, stop, terminate, and its leftover volumes.

use super::ec2::Params;
use super::images::parse_time;
use super::xml::Element;
use super::*;

impl Aws {
    /// The architectures an instance type supports, or None when EC2 has no such type here.
    pub async fn instance_type_architectures(
        &self,
        instance_type: &str,
    ) -> Result<Option<Vec<String>>> {
        let out = self
            .ec2
            .call(
                "ec2:DescribeInstanceTypes",
                Params::new().set("InstanceType.1", instance_type),
            )
            .await;
        match out {
            Ok(out) => Ok(out.items("instanceTypeSet").next().map(|t| {
                t.at(&["processorInfo"])
                    .map(|p| {
                        p.items("supportedArchitectures")
                            .map(|a| a.text.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            })),
            // EC2 answers InvalidInstanceType for a type it does not have.
            Err(error)
                if error
                    .code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("InvalidInstanceType")) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
    /// The subnet's VPC, or None when the subnet does not exist.
    pub async fn subnet_vpc(&self, subnet_id: &str) -> Result<Option<String>> {
        let out = self
            .ec2
            .call(
                "ec2:DescribeSubnets",
                Params::new().set("SubnetId.1", subnet_id),
            )
            .await;
        Ok(not_found_is_none(out)?.and_then(|out| {
            out.items("subnetSet")
                .next()
                .and_then(|s| s.text_of("vpcId"))
                .map(str::to_owned)
        }))
    }
    /// The VPC of each security group that exists, by id; one that does not is missing.
    pub async fn security_group_vpcs(
        &self,
        group_ids: &[String],
    ) -> Result<BTreeMap<String, String>> {
        let mut found = BTreeMap::new();
        // One at a time: EC2 refuses the whole call when one id does not exist.
        for group_id in group_ids {
            let out = self
                .ec2
                .call(
                    "ec2:DescribeSecurityGroups",
                    Params::new().set("GroupId.1", group_id),
                )
                .await;
            if let Some(out) = not_found_is_none(out)?
                && let Some(group) = out.items("securityGroupInfo").next()
            {
                found.insert(
                    group_id.clone(),
                    group.text_of("vpcId").unwrap_or_default().to_owned(),
                );
            }
        }
        Ok(found)
    }
    pub async fn launch_builder(&self, request: &LaunchRequest) -> Result<String> {
        let profile = if request.instance_profile.starts_with("arn:") {
            "IamInstanceProfile.Arn"
        } else {
            "IamInstanceProfile.Name"
        };
        let params = Params::new()
            .set("ImageId", &request.image_id)
            .set("InstanceType", &request.instance_type)
            .set("MinCount", 1)
            .set("MaxCount", 1)
            .set("ClientToken", &request.client_token)
            .set(profile, &request.instance_profile)
            .set_opt("SubnetId", request.subnet_id.as_ref())
            .list("SecurityGroupId", &request.security_group_ids)
            .set("MetadataOptions.HttpEndpoint", "enabled")
            .set("MetadataOptions.HttpTokens", "required")
            .set("MetadataOptions.HttpPutResponseHopLimit", 2)
            .set("InstanceInitiatedShutdownBehavior", "terminate")
            .set_opt(
                "UserData",
                request.user_data.as_ref().map(|data| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(data)
                }),
            );
        let out = self
            .ec2
            .call(
                "ec2:RunInstances",
                block_device_mappings(params, &request.block_devices, true)
                    .tag_specifications(&["instance", "volume"], &request.tags),
            )
            .await?;
        out.items("instancesSet")
            .find_map(|i| i.text_of("instanceId"))
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| AwsError {
                operation: "ec2:RunInstances",
                code: None,
                message: "the answer named no instance".into(),
            })
    }
    /// The instance's console output (its boot and user data messages), as far as EC2 keeps it.
    /// The latest output: without `Latest`, EC2 answers the buffer it posted shortly after the
    /// instance's last state change, which misses what user data printed later. `Latest` is for
    /// Nitro instance types; where EC2 refuses it, the buffered output is read instead
    /// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html>).
    pub async fn console_output(&self, instance_id: &str) -> Result<String> {
        let latest = self
            .ec2
            .call(
                "ec2:GetConsoleOutput",
                Params::new()
                    .set("InstanceId", instance_id)
                    .set("Latest", true),
            )
            .await;
        let out = match latest {
            Err(error) if error.code.as_deref().is_some_and(latest_unsupported) => {
                tracing::debug!(instance_id, %error, "no latest console output; the buffered one");
                self.ec2
                    .call(
                        "ec2:GetConsoleOutput",
                        Params::new().set("InstanceId", instance_id),
                    )
                    .await?
            }
            other => other?,
        };
        use base64::Engine;
        let decoded = out
            .text_of("output")
            .and_then(|text| {
                let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD.decode(text).ok()
            })
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&decoded).into_owned())
    }
    /// Instances carrying every one of `tags`, with their state names.
    pub async fn instances_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>> {
        let pages = self
            .ec2
            .pages(
                "ec2:DescribeInstances",
                Params::new().tag_filters(tags).set("MaxResults", 1000),
            )
            .await?;
        Ok(pages
            .iter()
            .flat_map(instances)
            .filter_map(|i| {
                Some(Instance {
                    id: i.text_of("instanceId")?.to_owned(),
                    state: i.text_at(&["instanceState", "name"])?.to_owned(),
                    launched_ms: i
                        .text_of("launchTime")
                        .and_then(parse_time)
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok()),
                    role: i
                        .tags()
                        .find(|(k, _)| *k == "ecs-ami:role")
                        .map(|(_, v)| v.to_owned()),
                })
            })
            .collect())
    }
    /// The instance's state name, or None once EC2 no longer knows it.
    pub async fn instance_state(&self, instance_id: &str) -> Result<Option<String>> {
        Ok(self.instance_status(instance_id).await?.map(|s| s.state))
    }
    /// The instance's state and attached devices, or None once EC2 no longer knows it.
    pub async fn instance_status(&self, instance_id: &str) -> Result<Option<InstanceStatus>> {
        let out = self
            .ec2
            .call(
                "ec2:DescribeInstances",
                Params::new().set("InstanceId.1", instance_id),
            )
            .await;
        let Some(out) = not_found_is_none(out)? else {
            return Ok(None);
        };
        Ok(instances(&out)
            .find(|i| i.text_of("instanceId") == Some(instance_id))
            .and_then(|i| {
                let state = i.text_at(&["instanceState", "name"])?.to_owned();
                Some(InstanceStatus {
                    state,
                    state_reason: i
                        .text_at(&["stateReason", "message"])
                        .or(i.text_at(&["stateReason", "code"]))
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned),
                    root_device: i.text_of("rootDeviceName").map(str::to_owned),
                    devices: i
                        .items("blockDeviceMapping")
                        .filter_map(|m| m.text_of("deviceName").map(str::to_owned))
                        .collect(),
                })
            }))
    }
    pub async fn stop_instance(&self, instance_id: &str) -> Result<()> {
        self.ec2
            .call(
                "ec2:StopInstances",
                Params::new().set("InstanceId.1", instance_id),
            )
            .await?;
        Ok(())
    }
    /// NotFound is an error here: it may mean EC2 does not know a new instance yet (see
    /// `engine::terminate_builder`).
    pub async fn terminate_instance(&self, instance_id: &str) -> Result<()> {
        self.ec2
            .call(
                "ec2:TerminateInstances",
                Params::new().set("InstanceId.1", instance_id),
            )
            .await?;
        Ok(())
    }
    /// Volumes carrying every one of `tags` that are not attached to anything.
    pub async fn detached_volumes_tagged(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let pages = self
            .ec2
            .pages(
                "ec2:DescribeVolumes",
                Params::new().tag_filters(tags).set("MaxResults", 500),
            )
            .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.items("volumeSet"))
            // A volume's state is its `status` element in the answer.
            .filter(|v| v.text_of("status") == Some("available"))
            .filter_map(|v| v.text_of("volumeId").map(str::to_owned))
            .collect())
    }
    pub async fn delete_volume(&self, volume_id: &str) -> Result<()> {
        gone_is_done(
            self.ec2
                .call("ec2:DeleteVolume", Params::new().set("VolumeId", volume_id))
                .await,
        )
    }
}

/// How EC2 refuses `Latest` on an instance type that is not built on Nitro.
fn latest_unsupported(code: &str) -> bool {
    matches!(
        code,
        "UnsupportedOperation" | "InvalidParameterCombination" | "InvalidParameterValue"
    )
}

/// Every instance of a DescribeInstances answer, across its reservations.
fn instances(answer: &Element) -> impl Iterator<Item = &Element> {
    answer
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
}

/// `BlockDeviceMapping.N` of `devices`, added to `params`. `for_builder`: the builder's volumes
/// are always deleted with it, whatever the AMI's mapping says, so a failed build leaves no
/// volume behind. A device the AMI maps is named without its snapshot: EC2 fills in the rest of
/// the AMI's mapping, and a named snapshot would be authorized by RunInstances.
pub(super) fn block_device_mappings(
    mut params: Params,
    devices: &[BlockDevice],
    for_builder: bool,
) -> Params {
    for (i, device) in devices.iter().enumerate() {
        let prefix = format!("BlockDeviceMapping.{}", i + 1);
        let ebs = &device.ebs;
        let delete = if for_builder {
            true
        } else {
            ebs.delete_on_termination.unwrap_or(true)
        };
        let field = |name: &str| format!("{prefix}.Ebs.{name}");
        params = params
            .set(format!("{prefix}.DeviceName"), &device.device_name)
            .set_opt(field("VolumeSize"), ebs.volume_size)
            .set_opt(field("VolumeType"), ebs.volume_type.as_ref())
            .set_opt(field("Iops"), ebs.iops)
            .set_opt(field("Throughput"), ebs.throughput)
            .set_opt(field("Encrypted"), ebs.encrypted)
            // EC2 takes KmsKeyId in RunInstances' mappings only: the builder's volume is
            // encrypted with the key, and the image's snapshot inherits it.
            .set_opt(
                field("KmsKeyId"),
                ebs.kms_key_id.as_ref().filter(|_| for_builder),
            )
            .set(field("DeleteOnTermination"), delete);
    }
    params
}
