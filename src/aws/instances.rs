//! The builder instance and what it runs in: instance types, subnets, security groups, launch,
//! state, stop, terminate, and its leftover volumes.

use super::*;

impl Aws {
    /// The architectures an instance type supports, or None when EC2 has no such type here.
    pub async fn instance_type_architectures(
        &self,
        instance_type: &str,
    ) -> Result<Option<Vec<String>>> {
        let out = self
            .ec2
            .describe_instance_types()
            .instance_types(ec2t::InstanceType::from(instance_type))
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.instance_types().first().map(|t| {
                t.processor_info()
                    .map(|p| {
                        p.supported_architectures()
                            .iter()
                            .map(|a| a.as_str().to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            })),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeInstanceTypes", error);
                // EC2 answers InvalidInstanceType for a type it does not have.
                if error
                    .code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("InvalidInstanceType"))
                {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }
    /// The subnet's VPC, or None when the subnet does not exist.
    pub async fn subnet_vpc(&self, subnet_id: &str) -> Result<Option<String>> {
        let out = self
            .ec2
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .subnets()
                .first()
                .and_then(|s| s.vpc_id())
                .map(str::to_owned)),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeSubnets", error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
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
                .describe_security_groups()
                .group_ids(group_id)
                .send()
                .await;
            match out {
                Ok(out) => {
                    if let Some(group) = out.security_groups().first() {
                        found.insert(
                            group_id.clone(),
                            group.vpc_id().unwrap_or_default().to_owned(),
                        );
                    }
                }
                Err(error) => {
                    let error = AwsError::from_sdk("ec2:DescribeSecurityGroups", error);
                    if !error.is_not_found() {
                        return Err(error);
                    }
                }
            }
        }
        Ok(found)
    }
    pub async fn launch_builder(&self, request: &LaunchRequest) -> Result<String> {
        let profile = if request.instance_profile.starts_with("arn:") {
            ec2t::IamInstanceProfileSpecification::builder().arn(&request.instance_profile)
        } else {
            ec2t::IamInstanceProfileSpecification::builder().name(&request.instance_profile)
        };
        let out = self
            .ec2
            .run_instances()
            .image_id(&request.image_id)
            .instance_type(ec2t::InstanceType::from(request.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&request.client_token)
            .iam_instance_profile(profile.build())
            .set_subnet_id(request.subnet_id.clone())
            .set_security_group_ids(
                (!request.security_group_ids.is_empty())
                    .then(|| request.security_group_ids.clone()),
            )
            .metadata_options(
                ec2t::InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                    .http_tokens(ec2t::HttpTokensState::Required)
                    .http_put_response_hop_limit(2)
                    .build(),
            )
            .instance_initiated_shutdown_behavior(ec2t::ShutdownBehavior::Terminate)
            .set_user_data(request.user_data.as_ref().map(|data| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(data)
            }))
            .set_block_device_mappings(Some(block_device_mappings(
                &request.block_devices,
                true,
                &request.device_snapshots,
            )))
            .tag_specifications(tag_specification(
                ec2t::ResourceType::Instance,
                &request.tags,
            ))
            .tag_specifications(tag_specification(ec2t::ResourceType::Volume, &request.tags))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:RunInstances", e))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_owned)
            .ok_or_else(|| AwsError {
                operation: "ec2:RunInstances",
                code: None,
                message: "the answer named no instance".into(),
            })
    }
    /// The instance's console output (its boot and user data messages), as far as EC2 keeps it.
    pub async fn console_output(&self, instance_id: &str) -> Result<String> {
        let out = self
            .ec2
            .get_console_output()
            // The buffered output (Latest is for Nitro instances only).
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:GetConsoleOutput", e))?;
        use base64::Engine;
        let decoded = out
            .output()
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&decoded).into_owned())
    }
    /// Instances carrying every one of `tags`, with their state names.
    pub async fn instances_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>> {
        let out = self
            .ec2
            .describe_instances()
            .set_filters(Some(tag_filters(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some(Instance {
                    id: i.instance_id()?.to_owned(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())?,
                    launched_ms: i
                        .launch_time()
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok()),
                    role: i
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some("ecs-ami:role"))
                        .and_then(|t| t.value())
                        .map(str::to_owned),
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
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.instance_id() == Some(instance_id))
                .and_then(|i| {
                    let state = i.state().and_then(|s| s.name())?.as_str().to_owned();
                    Some(InstanceStatus {
                        state,
                        state_reason: i
                            .state_reason()
                            .and_then(|r| r.message().or(r.code()))
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned),
                        root_device: i.root_device_name().map(str::to_owned),
                        devices: i
                            .block_device_mappings()
                            .iter()
                            .filter_map(|m| m.device_name().map(str::to_owned))
                            .collect(),
                    })
                })),
            Err(error) => {
                let error = AwsError::from_sdk("ec2:DescribeInstances", error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }
    pub async fn stop_instance(&self, instance_id: &str) -> Result<()> {
        self.ec2
            .stop_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:StopInstances", e))?;
        Ok(())
    }
    /// NotFound is an error here: it may mean EC2 does not know a new instance yet (see
    /// `engine::terminate_builder`).
    pub async fn terminate_instance(&self, instance_id: &str) -> Result<()> {
        self.ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:TerminateInstances", e))?;
        Ok(())
    }
    /// Volumes carrying every one of `tags` that are not attached to anything.
    pub async fn detached_volumes_tagged(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_volumes()
            .set_filters(Some(tag_filters(tags)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeVolumes", e))?;
        Ok(out
            .volumes()
            .iter()
            .filter(|v| v.state() == Some(&ec2t::VolumeState::Available))
            .filter_map(|v| v.volume_id().map(str::to_owned))
            .collect())
    }
    pub async fn delete_volume(&self, volume_id: &str) -> Result<()> {
        gone_is_done(
            "ec2:DeleteVolume",
            self.ec2.delete_volume().volume_id(volume_id).send().await,
        )
    }
}

/// `for_builder`: the builder's volumes are always deleted with it, whatever the AMI's mapping
/// says, so a failed build leaves no volume behind.
pub(super) fn block_device_mappings(
    devices: &[BlockDevice],
    for_builder: bool,
    snapshots: &BTreeMap<String, String>,
) -> Vec<ec2t::BlockDeviceMapping> {
    devices
        .iter()
        .map(|device| {
            let ebs = &device.ebs;
            let delete = if for_builder {
                Some(true)
            } else {
                ebs.delete_on_termination.or(Some(true))
            };
            ec2t::BlockDeviceMapping::builder()
                .device_name(&device.device_name)
                .ebs(
                    ec2t::EbsBlockDevice::builder()
                        .set_volume_size(ebs.volume_size.map(|n| n as i32))
                        .set_volume_type(ebs.volume_type.as_deref().map(ec2t::VolumeType::from))
                        .set_iops(ebs.iops.map(|n| n as i32))
                        .set_throughput(ebs.throughput.map(|n| n as i32))
                        .set_encrypted(ebs.encrypted)
                        // EC2 takes KmsKeyId in RunInstances' mappings only: the builder's volume
                        // is encrypted with the key, and the image's snapshot inherits it.
                        .set_kms_key_id(if for_builder {
                            ebs.kms_key_id.clone()
                        } else {
                            None
                        })
                        .set_delete_on_termination(delete)
                        .set_snapshot_id(snapshots.get(&device.device_name).cloned())
                        .build(),
                )
                .build()
        })
        .collect()
}
