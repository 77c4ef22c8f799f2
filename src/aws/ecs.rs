//! ECS, for `Tests.EcsCluster`: whether the test instance became a container instance of the
//! cluster, with its agent connected.

use super::*;

/// A container instance as DescribeContainerInstances answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    pub arn: String,
    /// `ACTIVE`, `DRAINING`, `REGISTERING`, ...
    pub status: String,
    pub agent_connected: bool,
}

impl Aws {
    /// The container instance that EC2 instance `instance_id` is in `cluster`, if it joined.
    /// ListContainerInstances filtered by the instance (the cluster query language's
    /// `ec2InstanceId`), then DescribeContainerInstances; the answer is checked for the
    /// instance too.
    pub async fn container_instance(
        &self,
        cluster: &str,
        instance_id: &str,
    ) -> Result<Option<ContainerInstance>> {
        let Some(ecs) = &self.ecs else {
            return Err(AwsError {
                operation: "ecs:ListContainerInstances",
                code: None,
                message: "no ECS client configured".into(),
            });
        };
        let listed = ecs
            .list_container_instances()
            .cluster(cluster)
            .filter(format!("ec2InstanceId == {instance_id}"))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:ListContainerInstances", e))?;
        let arns = listed.container_instance_arns().to_vec();
        if arns.is_empty() {
            return Ok(None);
        }
        let described = ecs
            .describe_container_instances()
            .cluster(cluster)
            .set_container_instances(Some(arns))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:DescribeContainerInstances", e))?;
        Ok(described
            .container_instances()
            .iter()
            .find(|c| c.ec2_instance_id() == Some(instance_id))
            .map(|c| ContainerInstance {
                arn: c.container_instance_arn().unwrap_or_default().to_owned(),
                status: c.status().unwrap_or_default().to_owned(),
                agent_connected: c.agent_connected(),
            }))
    }
}
