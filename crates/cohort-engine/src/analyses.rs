//! The ready-made analyses (`cohort-analysis`) over this process's lake, recent events
//! included: what `POST /api/v1/analyses/*` and `cohort analyse` run.

use crate::{Engine, EngineError};
use cohort_analysis::{
    ActiveCustomers, ActiveRequest, Funnel, FunnelRequest, Retention, RetentionRequest, Revenue,
    RevenueRequest, RunOptions, Trends, TrendsRequest,
};
use cohort_lake::Lake;

/// Analysis use cases. Each validates its request before it reads anything.
impl Engine {
    async fn analysis_lake(&self) -> Result<&Lake, EngineError> {
        Ok(self.lake()?.lake().await?)
    }

    pub async fn active_customers(
        &self,
        request: &ActiveRequest,
    ) -> Result<ActiveCustomers, EngineError> {
        request.validate()?;
        let lake = self.analysis_lake().await?;
        Ok(cohort_analysis::active_customers(lake, request, &RunOptions::default()).await?)
    }

    pub async fn trends(&self, request: &TrendsRequest) -> Result<Trends, EngineError> {
        request.validate()?;
        let lake = self.analysis_lake().await?;
        Ok(cohort_analysis::trends(lake, request, &RunOptions::default()).await?)
    }

    pub async fn funnel(&self, request: &FunnelRequest) -> Result<Funnel, EngineError> {
        request.validate()?;
        let lake = self.analysis_lake().await?;
        Ok(cohort_analysis::funnel(lake, request, &RunOptions::default()).await?)
    }

    pub async fn retention(&self, request: &RetentionRequest) -> Result<Retention, EngineError> {
        request.validate()?;
        let lake = self.analysis_lake().await?;
        Ok(cohort_analysis::retention(lake, request, &RunOptions::default()).await?)
    }

    pub async fn revenue(&self, request: &RevenueRequest) -> Result<Revenue, EngineError> {
        request.validate()?;
        let lake = self.analysis_lake().await?;
        Ok(cohort_analysis::revenue(lake, request, &RunOptions::default()).await?)
    }
}
