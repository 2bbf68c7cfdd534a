//! The subject of a review: the object under judgement as one value from admission to
//! decision — what it is (operation, kind, namespace, name), the pod it runs and, once the
//! engine has gathered them, its image sites with their evidence. Policies read it through
//! [`crate::policy::PolicyInput`], the decision names it in its messages.

use crate::policy::ImageEntry;
use crate::workload::PodView;

/// The object being judged.
#[derive(Debug, Clone, Default)]
pub struct ReviewSubject {
    /// `CREATE`, `UPDATE`, ... (as the AdmissionRequest spells it).
    pub operation: &'static str,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// Empty when the API server has not named it yet (`generateName`).
    pub name: String,
    /// The pod spec it runs (empty until extracted).
    pub pod: PodView,
    /// One entry per judged image site, in pod-spec order (empty until the engine fills it).
    pub images: Vec<ImageEntry>,
}

impl ReviewSubject {
    /// A subject known only by what the request says it is.
    pub fn new(
        operation: &'static str,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            pod: PodView::default(),
            images: Vec::new(),
        }
    }

    /// `Deployment team-a/web`, `Pod in namespace team-a`, `Namespace x`: for messages.
    pub fn describe(&self) -> String {
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (true, true) => self.kind.clone(),
            (true, false) => format!("{} {}", self.kind, self.name),
            (false, true) => format!("{} in namespace {}", self.kind, self.namespace),
            (false, false) => format!("{} {}/{}", self.kind, self.namespace, self.name),
        }
    }
}
