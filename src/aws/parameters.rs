//! Parameter Store: the source AMI parameter, and the build leases and request records.

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
            .ok_or_else(|| AwsError {
                operation: "ssm:GetParameter",
                code: None,
                message: format!("parameter {name} has no value"),
            })
    }
    /// Creates a parameter only if it does not exist: the one atomic test-and-set this product
    /// needs (the build lease). False when it already exists.
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
            Err(error) => {
                let error = AwsError::from_sdk("ssm:PutParameter", error);
                if error.code.as_deref() == Some("ParameterAlreadyExists") {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }
    /// A parameter's value, or None when it does not exist.
    pub async fn parameter_if_exists(&self, name: &str) -> Result<Option<String>> {
        match self.ssm.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(error) => {
                let error = AwsError::from_sdk("ssm:GetParameter", error);
                if error.code.as_deref() == Some("ParameterNotFound") {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
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
