//! The service core, built once from the config: the model source, the loaded model, the
//! [`Classifier`] with its inference workers, the shadow challenger and the reloaders that swap
//! versions in. The server's front doors (`app`) and `newscls classify`/`eval` (`files`) start
//! their model here, the one way it is started.

use std::sync::Arc;

use crate::infra::config::Config;
use crate::infra::device::Device;
use crate::infra::metrics::Metrics;
use crate::lifecycle::reload::{self, ReloadError, Reloader};
use crate::lifecycle::source::ModelSource;
use crate::pipeline::classify::{Classifier, Shadow};

/// What the server runs: the classifier and the reloaders that keep its model current.
pub struct Service {
    pub classifier: Arc<Classifier>,
    pub metrics: Arc<Metrics>,
    /// Polls the model source and swaps new versions in (also on SIGHUP and `/admin/reload`).
    pub reloader: Arc<Reloader>,
    /// The same for the shadow challenger, when `shadow.uri` names one.
    pub challenger: Option<Arc<Reloader>>,
}

/// The model `config.model` names (a directory or a registry version), loaded and warmed up,
/// with the classifier's inference workers running over it; and the source it came from.
pub fn start_classifier(
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<(Classifier, Box<dyn ModelSource>), ReloadError> {
    let source = reload::source(&config.model)?;
    // The registry client blocks: it runs on a plain thread, outside any async runtime.
    let loaded = std::thread::scope(|scope| {
        scope
            .spawn(|| reload::load_initial(source.as_ref(), &config.model))
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let classifier = Classifier::start(loaded, &config.batching, &config.limits, metrics);
    Ok((classifier, source))
}

impl Service {
    /// The classifier over the configured model, with the challenger (loading in the
    /// background: the champion does not wait for it) and the registry poll running.
    pub fn start(config: &Config) -> Result<Service, ReloadError> {
        let metrics = Arc::new(Metrics::new());
        let (mut classifier, source) = start_classifier(config, metrics.clone())?;
        let challenger_config = config.shadow.model_config(&config.model);
        if challenger_config.is_some() {
            classifier = classifier.with_shadow(Shadow::new(
                &config.shadow,
                &config.batching,
                metrics.clone(),
            ));
        }
        let classifier = Arc::new(classifier);
        if challenger_config.is_some()
            && config.model.intra_op_spinning
            && classifier.serving().device == Device::Cpu
        {
            tracing::warn!(
                "shadow.uri with model.intra_op_spinning: true on the CPU: the champion's \
                 spinning threads leave the lowest-priority challenger little CPU, and it will \
                 drop most mirrored texts; set model.intra_op_spinning: false"
            );
        }
        let reloader = Arc::new(Reloader::new(
            source,
            &config.model,
            classifier.clone(),
            metrics.clone(),
        ));
        reloader.spawn_poller();
        let challenger = match &challenger_config {
            Some(challenger) => {
                let reloader = Arc::new(
                    Reloader::new(
                        reload::source(challenger)?,
                        challenger,
                        classifier.clone(),
                        metrics.clone(),
                    )
                    .for_challenger(),
                );
                reloader.start_challenger();
                Some(reloader)
            }
            None => None,
        };
        Ok(Service {
            classifier,
            metrics,
            reloader,
            challenger,
        })
    }

    /// Checks the model sources now, as SIGHUP asks (a directory is reloaded, a URI resolved
    /// again); a reload already running is left to finish.
    pub async fn reload_now(&self) {
        if self.reloader.reload_off_runtime(true).await.is_err() {
            tracing::info!("SIGHUP: a reload is already running");
        }
        if let Some(challenger) = &self.challenger {
            if challenger.reload_off_runtime(true).await.is_err() {
                tracing::info!("SIGHUP: a challenger reload is already running");
            }
        }
    }
}
