//! The builder instance and what it runs in: instance types, subnets, security groups, launch,
//! state, stop, terminate, and its leftover volumes.

use aws_sdk_ec2::types as ec2t;

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
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstanceTypes", e));
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
            // EC2 answers InvalidInstanceType for a type it does not have.
            Err(error) if error.is(Code::UnknownInstanceType) => Ok(None),
            Err(error) => Err(error),
        }
    }
    /// The subnet's VPC, or None when the subnet does not exist.
    pub async fn subnet_vpc(&self, subnet_id: &str) -> Result<Option<String>> {
        let out = self
            .ec2
            .describe_subnets()
            .subnet_ids(subnet_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e));
        Ok(not_found_is_none(out)?.and_then(|out| {
            out.subnets()
                .first()
                .and_then(|s| s.vpc_id())
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
                .describe_security_groups()
                .group_ids(group_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e));
            if let Some(out) = not_found_is_none(out)?
                && let Some(group) = out.security_groups().first()
            {
                found.insert(
                    group_id.clone(),
                    group.vpc_id().unwrap_or_default().to_owned(),
                );
            }
        }
        Ok(found)
    }
    pub async fn launch_builder(&self, request: &LaunchRequest) -> Result<String> {
        let profile = ec2t::IamInstanceProfileSpecification::builder();
        let profile = if request.instance_profile.starts_with("arn:") {
            profile.arn(&request.instance_profile)
        } else {
            profile.name(&request.instance_profile)
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
            .set_block_device_mappings(
                (!request.block_devices.is_empty())
                    .then(|| block_device_mappings(&request.block_devices, true)),
            )
            .set_tag_specifications(Some(tag_specifications(
                &[ec2t::ResourceType::Instance, ec2t::ResourceType::Volume],
                &request.tags,
            )))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:RunInstances", e))?;
        out.instances()
            .iter()
            .find_map(|i| i.instance_id())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::in_answer("ec2:RunInstances", "the answer named no instance"))
    }
    /// The instance's console output (its boot and user data messages), as far as EC2 keeps it.
    /// The latest output: without `Latest`, EC2 answers the buffer it posted shortly after the
    /// instance's last state change, which misses what user data printed later. `Latest` is for
    /// Nitro instance types; where EC2 refuses it, the buffered output is read instead
    /// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html>).
    pub async fn console_output(&self, instance_id: &str) -> Result<String> {
        let ask = |latest: Option<bool>| {
            self.ec2
                .get_console_output()
                .instance_id(instance_id)
                .set_latest(latest)
                .send()
        };
        let out = match ask(Some(true))
            .await
            .map_err(|e| AwsError::from_sdk("ec2:GetConsoleOutput", e))
        {
            Err(error) if error.is(Code::Unsupported) => {
                tracing::debug!(instance_id, %error, "no latest console output; the buffered one");
                ask(None)
                    .await
                    .map_err(|e| AwsError::from_sdk("ec2:GetConsoleOutput", e))?
            }
            other => other?,
        };
        use base64::Engine;
        let decoded = out
            .output()
            .and_then(|text| {
                let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD.decode(text).ok()
            })
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&decoded).into_owned())
    }
    /// Instances carrying every one of `tags`, with their state names.
    pub async fn instances_tagged(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>> {
        self.instances_with_tags(tags, &[]).await
    }
    /// Instances carrying every one of `tags`, and a tag of each of `keys` whatever its value
    /// (DescribeInstances' `tag-key` filter), with their state names and tags.
    pub async fn instances_with_tags(
        &self,
        tags: &BTreeMap<String, String>,
        keys: &[&str],
    ) -> Result<Vec<Instance>> {
        let mut filters = tag_filters(tags);
        filters.extend(keys.iter().map(|key| ec2_filter("tag-key", [*key])));
        let reservations: Vec<ec2t::Reservation> = self
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
        let instances = reservations.iter().flat_map(|r| r.instances());
        Ok(instances
            .filter_map(|i| {
                Some(Instance {
                    id: i.instance_id()?.to_owned(),
                    state: i.state()?.name()?.clone(),
                    launched_ms: i
                        .launch_time()
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok()),
                    tags: tags_of(i.tags()),
                })
            })
            .collect())
    }
    /// The instance's state name, or None once EC2 no longer knows it.
    pub async fn instance_state(&self, instance_id: &str) -> Result<Option<InstanceStateName>> {
        Ok(self.instance_status(instance_id).await?.map(|s| s.state))
    }
    /// The instance's state and attached devices, or None once EC2 no longer knows it.
    pub async fn instance_status(&self, instance_id: &str) -> Result<Option<InstanceStatus>> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e));
        let Some(out) = not_found_is_none(out)? else {
            return Ok(None);
        };
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .and_then(|i| {
                let state = i.state()?.name()?.clone();
                let reason = i.state_reason();
                Some(InstanceStatus {
                    state,
                    state_reason: reason
                        .and_then(|r| r.message())
                        .or(reason.and_then(|r| r.code()))
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned),
                    root_device: i.root_device_name().map(str::to_owned),
                    devices: i
                        .block_device_mappings()
                        .iter()
                        .filter_map(|m| m.device_name().map(str::to_owned))
                        .collect(),
                })
            }))
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
        let volumes: Vec<ec2t::Volume> = self
            .ec2
            .describe_volumes()
            .set_filters(Some(tag_filters(tags)))
            .max_results(500)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeVolumes", e))?;
        Ok(volumes
            .iter()
            .filter(|v| v.state() == Some(&ec2t::VolumeState::Available))
            .filter_map(|v| v.volume_id().map(str::to_owned))
            .collect())
    }
    pub async fn delete_volume(&self, volume_id: &str) -> Result<()> {
        gone_is_done(
            self.ec2
                .delete_volume()
                .volume_id(volume_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DeleteVolume", e)),
        )
    }
}

/// The block device mappings of `devices`. `for_builder`: the builder's volumes are always
/// deleted with it, whatever the AMI's mapping says, so a failed build leaves no volume behind.
/// A device the AMI maps is named without its snapshot: EC2 fills in the rest of the AMI's
/// mapping, and a named snapshot would be authorized by RunInstances.
pub(super) fn block_device_mappings(
    devices: &[BlockDevice],
    for_builder: bool,
) -> Vec<ec2t::BlockDeviceMapping> {
    devices
        .iter()
        .map(|device| {
            let ebs = &device.ebs;
            let delete = if for_builder {
                true
            } else {
                ebs.delete_on_termination.unwrap_or(true)
            };
            let volume = ec2t::EbsBlockDevice::builder()
                .set_volume_size(ebs.volume_size.map(saturated))
                .set_volume_type(ebs.volume_type.as_deref().map(ec2t::VolumeType::from))
                .set_iops(ebs.iops.map(saturated))
                .set_throughput(ebs.throughput.map(saturated))
                .set_encrypted(ebs.encrypted)
                // EC2 takes KmsKeyId in RunInstances' mappings only: the builder's volume is
                // encrypted with the key, and the image's snapshot inherits it.
                .set_kms_key_id(ebs.kms_key_id.clone().filter(|_| for_builder))
                .delete_on_termination(delete)
                .build();
            ec2t::BlockDeviceMapping::builder()
                .device_name(&device.device_name)
                .ebs(volume)
                .build()
        })
        .collect()
}

/// EC2's `Integer` for one of the spec's sizes, which its checks keep far below `i32::MAX`
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EbsBlockDevice.html>); a larger
/// one would reach EC2 as `i32::MAX`, which it refuses, rather than wrap.
fn saturated(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
