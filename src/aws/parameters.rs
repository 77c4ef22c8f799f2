//! Parameter Store: the source AMI parameter, the build leases and request records, and the
//! parameters that publish an AMI's id (`SsmParameters`).

use super::*;

impl Aws {
    pub async fn parameter_value(&self, name: &str) -> Result<String> {
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:GetParameter", e))?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_owned)
            .ok_or_else(|| {
                AwsError::in_answer("ssm:GetParameter", format!("parameter {name} has no value"))
            })
    }
    /// Creates a parameter only if it does not exist: the one atomic test-and-set this product
    /// needs (the build lease). False when it already exists with another value: an attempt the
    /// SDK retried after a timeout may have landed, and then the parameter holds this very value
    /// (each lease generation and record carries a fresh token or time), which is ours.
    pub async fn create_parameter(&self, name: &str, value: &str) -> Result<bool> {
        let put = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ssmt::ParameterType::String)
            .overwrite(false)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_already_exists()) =>
            {
                Ok(self.parameter_if_exists(name).await?.as_deref() == Some(value))
            }
            Err(error) => Err(AwsError::from_sdk("ssm:PutParameter", error)),
        }
    }
    /// A parameter's value, or None when it does not exist.
    pub async fn parameter_if_exists(&self, name: &str) -> Result<Option<String>> {
        Ok(self.parameter_state(name).await?.map(|state| state.value))
    }
    /// The values of those of `names` (at most 10: GetParameters' limit) that exist, in one
    /// call (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameters.html>:
    /// names that do not exist come back as `InvalidParameters`, not as an error).
    pub async fn parameters_named(
        &self,
        names: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>> {
        debug_assert!(names.len() <= 10, "GetParameters takes at most 10 names");
        let out = self
            .ssm
            .get_parameters()
            .set_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:GetParameters", e))?;
        Ok(out
            .parameters()
            .iter()
            .filter_map(|p| Some((p.name()?.to_owned(), p.value()?.to_owned())))
            .collect())
    }
    /// The parameters directly under `path`, as (name, value).
    pub async fn parameters_under(&self, path: &str) -> Result<Vec<(String, String)>> {
        self.parameters_below(path, false, usize::MAX).await
    }
    /// The parameters under `path`, at any depth when `recursive`, as (name, value); at most
    /// `pages` pages of results.
    pub async fn parameters_below(
        &self,
        path: &str,
        recursive: bool,
        pages: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        let mut stream = self
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(recursive)
            .into_paginator()
            .send();
        let mut left = pages;
        while left > 0
            && let Some(page) = stream.next().await
        {
            left -= 1;
            let page = page.map_err(|e| AwsError::from_sdk("ssm:GetParametersByPath", e))?;
            found.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| Some((p.name()?.to_owned(), p.value()?.to_owned()))),
            );
        }
        Ok(found)
    }
    /// Deletes every parameter under `path`, at any depth; answers how many.
    pub async fn delete_parameters_below(&self, path: &str) -> Result<usize> {
        let names: Vec<String> = self
            .parameters_below(path, true, usize::MAX)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        self.delete_parameters(&names).await?;
        Ok(names.len())
    }
    /// Deletes those of `names` (at most 10) that exist; answers those that did.
    pub async fn delete_parameters_named(&self, names: &[String]) -> Result<Vec<String>> {
        debug_assert!(names.len() <= 10, "DeleteParameters takes at most 10 names");
        let out = self
            .ssm
            .delete_parameters()
            .set_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:DeleteParameters", e))?;
        Ok(out.deleted_parameters().to_vec())
    }
    pub async fn delete_parameters(&self, names: &[String]) -> Result<()> {
        for batch in names.chunks(10) {
            self.ssm
                .delete_parameters()
                .set_names(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ssm:DeleteParameters", e))?;
        }
        Ok(())
    }
    /// Writes an AMI id with data type `aws:ec2:image`. Parameter Store validates such a value
    /// after answering: the new version exists only once the AMI is found available
    /// (<https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html>),
    /// so the caller reads it back.
    /// Answers the version Parameter Store will create if it takes the value.
    pub async fn put_image_parameter(&self, name: &str, image_id: &str) -> Result<i64> {
        let out = self
            .ssm
            .put_parameter()
            .name(name)
            .value(image_id)
            .r#type(ssmt::ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:PutParameter", e))?;
        Ok(out.version())
    }
    /// A parameter's current version, value and data type; None when it does not exist.
    pub async fn parameter_state(&self, name: &str) -> Result<Option<ParameterState>> {
        match self.ssm.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().map(|p| ParameterState {
                version: p.version(),
                value: p.value().unwrap_or_default().to_owned(),
                data_type: p.data_type().unwrap_or("text").to_owned(),
            })),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(error) => Err(AwsError::from_sdk("ssm:GetParameter", error)),
        }
    }
    /// Every value the parameter held, oldest first; empty when it does not exist.
    pub async fn parameter_history(&self, name: &str) -> Result<Vec<String>> {
        let mut values = Vec::new();
        let mut pages = self
            .ssm
            .get_parameter_history()
            .name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => values.extend(
                    page.parameters()
                        .iter()
                        .filter_map(|p| Some((p.version(), p.value()?.to_owned()))),
                ),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_parameter_not_found()) =>
                {
                    return Ok(Vec::new());
                }
                Err(error) => return Err(AwsError::from_sdk("ssm:GetParameterHistory", error)),
            }
        }
        values.sort_by_key(|(version, _)| *version);
        Ok(values.into_iter().map(|(_, value)| value).collect())
    }
    pub async fn overwrite_parameter(&self, name: &str, value: &str) -> Result<()> {
        self.ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ssmt::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:PutParameter", e))?;
        Ok(())
    }
}
