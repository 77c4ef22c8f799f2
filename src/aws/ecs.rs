//! ECS, for `Tests.EcsCluster`: whether the test instance became a container instance of the
//! cluster, with its agent connected.

use super::*;

/// A container instance as DescribeContainerInstances answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    pub arn: String,
    pub status: ContainerInstanceStatus,
    pub agent_connected: bool,
}

impl Aws {
    /// The container instance that EC2 instance `instance_id` is in `cluster`, if it joined.
    /// ListContainerInstances filtered by the instance (the cluster query language's
    /// `ec2InstanceId`), every page (a filtered list may come as empty pages that carry a
    /// nextToken), then DescribeContainerInstances; the answer is checked for the instance too
    /// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListContainerInstances.html>,
    /// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeContainerInstances.html>).
    pub async fn container_instance(
        &self,
        cluster: &str,
        instance_id: &str,
    ) -> Result<Option<ContainerInstance>> {
        let Some(ecs) = &self.ecs else {
            return Err(AwsError::in_answer(
                "ecs:ListContainerInstances",
                "no ECS client configured",
            ));
        };
        let arns: Vec<String> = ecs
            .list_container_instances()
            .cluster(cluster)
            .filter(format!("ec2InstanceId == {instance_id}"))
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:ListContainerInstances", e))?;
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
        // A container instance ECS could not describe is in `failures` (reason MISSING when it
        // is gone); the instance is then taken as not (or no longer) in the cluster.
        if !described.failures().is_empty() {
            tracing::info!(cluster, instance_id, failures = ?described.failures(), "ECS could not describe");
        }
        Ok(described
            .container_instances()
            .iter()
            .find(|c| c.ec2_instance_id() == Some(instance_id))
            .map(|c| ContainerInstance {
                arn: c.container_instance_arn().unwrap_or_default().to_owned(),
                status: ContainerInstanceStatus::from(c.status().unwrap_or_default()),
                agent_connected: c.agent_connected(),
            }))
    }
}

/// The container images a task definition names, as `DescribeTaskDefinition` answers it
/// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTaskDefinition.html>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionImages {
    /// The revision's ARN (a family alone resolves to its latest ACTIVE revision).
    pub arn: String,
    /// Each container's name and image, in the task definition's order.
    pub containers: Vec<(String, String)>,
    /// Containers that pull with `repositoryCredentials` (a private registry's secret).
    pub with_credentials: Vec<String>,
}

impl Aws {
    /// The images of `task_definition` (family, `family:revision` or ARN). ECS answers
    /// `ClientException` for one that does not exist (and for a malformed one): an error whose
    /// message the Reason quotes.
    pub async fn task_definition_images(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinitionImages> {
        let Some(ecs) = &self.ecs else {
            return Err(AwsError::in_answer(
                "ecs:DescribeTaskDefinition",
                "no ECS client configured",
            ));
        };
        let answer = ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:DescribeTaskDefinition", e))?;
        let Some(definition) = answer.task_definition() else {
            return Err(AwsError::in_answer(
                "ecs:DescribeTaskDefinition",
                "the answer has no task definition",
            ));
        };
        let containers = definition.container_definitions();
        Ok(TaskDefinitionImages {
            arn: definition
                .task_definition_arn()
                .unwrap_or(task_definition)
                .to_owned(),
            containers: containers
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name().unwrap_or_default().to_owned(),
                        c.image()?.to_owned(),
                    ))
                })
                .collect(),
            with_credentials: containers
                .iter()
                .filter(|c| c.repository_credentials().is_some())
                .map(|c| c.name().unwrap_or_default().to_owned())
                .collect(),
        })
    }
}
