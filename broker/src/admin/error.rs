//! The admin API's errors, rendered as Pulsar renders them: a status code
//! and `{"reason": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use magnetar_metadata::MetadataError;

use crate::storage::StorageError;
use crate::topic::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 404: the tenant, namespace, topic or subscription does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: it exists already, or something still depends on it.
    #[error("{0}")]
    Conflict(String),
    /// 412: the request is valid but the resource's state refuses it (a
    /// topic with clients, a partition count that does not grow).
    #[error("{0}")]
    PreconditionFailed(String),
    /// 405: the operation does not apply to this kind of resource (Pulsar's
    /// answer to, e.g., a reset to a message id on a partitioned topic).
    #[error("{0}")]
    NotAllowed(String),
    /// 400: a malformed body or value; nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: auth is on and the request carries no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the broker is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: metadata or storage failed.
    #[error("{0}")]
    Internal(String),
    /// The refusal of another broker this one asked on the caller's behalf
    /// (a partition's owner), with that broker's status.
    #[error("{reason}")]
    Forwarded { status: StatusCode, reason: String },
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AdminError::NotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Forwarded { status, .. } => *status,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let AdminError::Internal(reason) = &self {
            tracing::warn!(%reason, "admin request failed");
        }
        let body = Json(serde_json::json!({ "reason": self.to_string() }));
        (self.status(), body).into_response()
    }
}

impl From<MetadataError> for AdminError {
    fn from(e: MetadataError) -> Self {
        AdminError::Internal(format!("metadata: {e}"))
    }
}

impl From<StorageError> for AdminError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(why) => AdminError::NotFound(why),
            StorageError::Rejected(why) => AdminError::PreconditionFailed(why),
            StorageError::Unavailable(_) | StorageError::NotEnoughReplicas { .. } => {
                AdminError::Unavailable(e.to_string())
            }
            e => AdminError::Internal(format!("storage: {e}")),
        }
    }
}

impl From<ServiceError> for AdminError {
    fn from(e: ServiceError) -> Self {
        let reason = e.to_string();
        match e {
            ServiceError::InvalidTopic(_) => AdminError::BadRequest(reason),
            ServiceError::NamespaceNotFound(_)
            | ServiceError::TopicNotFound(_)
            | ServiceError::SubscriptionNotFound(_) => AdminError::NotFound(reason),
            ServiceError::TopicBusy(_)
            | ServiceError::TopicBeingDeleted(_)
            | ServiceError::SubscriptionBusy(_)
            | ServiceError::BacklogQuotaExceeded { .. }
            | ServiceError::ProducerLimit { .. }
            | ServiceError::ConsumerLimit { .. }
            | ServiceError::SubscriptionLimit { .. }
            | ServiceError::TopicLimit { .. }
            | ServiceError::Subscribe(_) => AdminError::PreconditionFailed(reason),
            ServiceError::ShuttingDown | ServiceError::NotOwned(_) => {
                AdminError::Unavailable(reason)
            }
            ServiceError::Storage(_) | ServiceError::Metadata(_) => AdminError::Internal(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_pulsar_style_json() {
        let response = AdminError::Conflict("Tenant already exists".into()).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({"reason": "Tenant already exists"}));
    }

    #[test]
    fn service_errors_map_to_statuses() {
        let busy: AdminError = ServiceError::TopicBusy("t".into()).into();
        assert_eq!(busy.status(), StatusCode::PRECONDITION_FAILED);
        let missing: AdminError = ServiceError::TopicNotFound("t".into()).into();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let down: AdminError = ServiceError::ShuttingDown.into();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
