//! Fixtures shared by the unit tests.

use kube::api::ObjectMeta;

use crate::crd::{InferenceDeployment, InferenceDeploymentSpec, ModelSpec};

pub fn spec() -> InferenceDeploymentSpec {
    InferenceDeploymentSpec {
        model: ModelSpec {
            source: "/models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            quantization: None,
            served_name: Some("smollm2".into()),
        },
        image: "infergate-server:v1".into(),
        replicas: 2,
        resources: Default::default(),
        scheduling: Default::default(),
        server: Default::default(),
        slo: Default::default(),
        rollout: Default::default(),
        metrics: Default::default(),
        autoscaling: None,
    }
}

/// A stored object as the apiserver returns it: namespaced, with uid, generation and
/// resourceVersion (no finalizer: the operator sets none).
pub fn infd(spec: InferenceDeploymentSpec) -> InferenceDeployment {
    let mut obj = InferenceDeployment::new("chat", spec);
    obj.metadata = ObjectMeta {
        name: Some("chat".into()),
        namespace: Some("ml".into()),
        uid: Some("0b7c6b4e-1111-2222-3333-444455556666".into()),
        generation: Some(3),
        resource_version: Some("100".into()),
        ..ObjectMeta::default()
    };
    obj
}

/// A gate that measures nothing: it answers a preset observation and records what it was asked.
#[derive(Default)]
pub struct FakeGate {
    pub observation: std::sync::Mutex<crate::gate::GateObservation>,
    pub started: std::sync::Mutex<Vec<(String, crate::gate::GateJob)>>,
    pub stopped: std::sync::Mutex<Vec<String>>,
}

impl FakeGate {
    pub fn with_report(report: crate::rollout::WindowReport) -> Self {
        let gate = FakeGate::default();
        *gate.observation.lock().unwrap() = crate::gate::GateObservation { report: Some(report), busy: false };
        gate
    }
}

impl crate::gate::Gate for FakeGate {
    fn observe(&self, _key: &str) -> crate::gate::GateObservation {
        self.observation.lock().unwrap().clone()
    }

    fn start(&self, key: &str, job: crate::gate::GateJob) {
        self.started.lock().unwrap().push((key.to_string(), job));
    }

    fn stop(&self, key: &str) {
        self.stopped.lock().unwrap().push(key.to_string());
    }
}

/// A signal reader that answers a preset reading and records the jobs it was asked.
#[derive(Default)]
pub struct FakeSignals {
    pub reading: std::sync::Mutex<crate::autoscale::signal::SignalReading>,
    pub asked: std::sync::Mutex<Vec<crate::autoscale::SignalJob>>,
}

impl crate::autoscale::SignalReader for FakeSignals {
    fn read(
        &self,
        job: crate::autoscale::SignalJob,
    ) -> futures::future::BoxFuture<'_, crate::autoscale::signal::SignalReading> {
        self.asked.lock().unwrap().push(job);
        let reading = self.reading.lock().unwrap().clone();
        Box::pin(async move { reading })
    }

    fn forget(&self, _key: &str) {}
}
