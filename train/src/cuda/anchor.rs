//! The anchoring (γ) terms on the GPU: `crate::anchor::Anchor::loss_grad`'s five products as
//! GEMMs over the residual streams the student's and the teacher's forwards left on the device,
//! so no `n × d` stream crosses to the host. The maps and their AdamW moments stay on the host
//! (`trainer::engine`): each micro-batch uploads an anchor's basis and current map
//! (`d_t × (k + d_s)` floats, a few MB in all) and reads back its map's gradient.

use nexus_kernels::cuda::{GpuBuffer, SUM_SQUARES_BLOCKS};

use super::forward::DeviceActs;
use super::CudaStudent;
use crate::anchor::Anchor;
use crate::engine::{check_len, EngineError};

/// One anchor on the device: its basis `P` (k × d_t), its map `W` (d_t × d_s) as of this
/// micro-batch, and the map's gradient, accumulated by [`CudaStudent::anchor_loss_grad`].
pub struct DeviceAnchor {
    pub student_layer: usize,
    pub teacher_layer: usize,
    k: usize,
    d_teacher: usize,
    d_student: usize,
    scale: f32,
    basis: GpuBuffer<f32>,
    map: GpuBuffer<f32>,
    d_map: GpuBuffer<f32>,
}

/// Which rows of a batch of `n_seq` sequences of `seq_len` tokens count: all but each
/// sequence's first `sink_tokens` (`crate::anchor::sink_mask`).
#[derive(Debug, Clone, Copy)]
pub struct AnchorRows {
    pub n_seq: usize,
    pub seq_len: usize,
    pub sink_tokens: usize,
}

impl AnchorRows {
    fn n(&self) -> usize {
        self.n_seq * self.seq_len
    }

    fn counted(&self) -> usize {
        self.n_seq * self.seq_len.saturating_sub(self.sink_tokens)
    }
}

impl CudaStudent {
    /// Uploads `a`'s basis and map; its map gradient starts at zero.
    pub fn upload_anchor(&self, a: &Anchor) -> Result<DeviceAnchor, EngineError> {
        let layer = a.teacher_layer;
        check_len(format!("anchor {layer}: basis"), a.k * a.d_teacher, a.basis.len())?;
        check_len(format!("anchor {layer}: map"), a.d_teacher * a.d_student, a.map.len())?;
        if a.d_student != self.cfg.n_embd {
            return Err(EngineError::Invalid(format!("anchor {layer}: maps from width {}, the student's is {}", a.d_student, self.cfg.n_embd)));
        }
        let g = &self.gpu;
        Ok(DeviceAnchor {
            student_layer: a.student_layer,
            teacher_layer: a.teacher_layer,
            k: a.k,
            d_teacher: a.d_teacher,
            d_student: a.d_student,
            scale: a.scale,
            basis: g.upload(&a.basis)?,
            map: g.upload(&a.map)?,
            d_map: g.alloc(a.map.len())?,
        })
    }

    /// `Anchor::loss_grad` on the device: over the streams `h_student` (n × d_s) and
    /// `h_teacher` (n × d_t), returns `scale · mean ‖P (W h_s − h_t)‖²` over the rows `rows`
    /// lets count (0 when none does), adds `weight` × its gradient w.r.t. `h_student` into
    /// `d_h` (n × d_s) and w.r.t. `W` into the anchor's map gradient.
    ///
    /// U = h_s Wᵀ, R = U − h_t, Z = R Pᵀ (sink rows zeroed); dZ = 2·weight·scale/counted · Z;
    /// dR = dZ P; dW += dRᵀ h_s; dh_s += dR W.
    pub fn anchor_loss_grad(
        &self,
        a: &DeviceAnchor,
        h_student: &GpuBuffer<f32>,
        h_teacher: &GpuBuffer<f32>,
        rows: AnchorRows,
        weight: f32,
        d_h: &GpuBuffer<f32>,
    ) -> Result<f64, EngineError> {
        let (ds, dt, k, n) = (a.d_student, a.d_teacher, a.k, rows.n());
        let layer = a.teacher_layer;
        check_len(format!("anchor {layer}: student stream"), n * ds, h_student.len())?;
        check_len(format!("anchor {layer}: teacher stream"), n * dt, h_teacher.len())?;
        check_len(format!("anchor {layer}: d_h"), n * ds, d_h.len())?;
        if !weight.is_finite() {
            return Err(EngineError::Invalid(format!("anchor {layer}: weight {weight} is not finite")));
        }
        let counted = rows.counted();
        if counted == 0 {
            return Ok(0.0);
        }
        let g = &self.gpu;
        let r = g.alloc::<f32>(n * dt)?;
        self.linear(h_student.ptr(), a.map.ptr(), n, ds, dt, r.ptr(), false)?;
        g.tr_axpy(r.ptr(), h_teacher.ptr(), n * dt, -1.0)?;
        let z = g.alloc::<f32>(n * k)?;
        self.linear(r.ptr(), a.basis.ptr(), n, dt, k, z.ptr(), false)?;
        g.tr_zero_sink_rows(z.ptr(), rows.n_seq, rows.seq_len, rows.sink_tokens, k)?;
        let partial = g.alloc::<f64>(SUM_SQUARES_BLOCKS)?;
        let loss = a.scale as f64 * g.tr_sum_squares(z.ptr(), n * k, partial.ptr())? / counted as f64;
        if weight == 0.0 {
            return Ok(loss);
        }
        g.tr_scale(z.ptr(), n * k, 2.0 * weight * a.scale / counted as f32)?;
        // dR over R (no longer needed).
        self.linear_dx(z.ptr(), a.basis.ptr(), n, dt, k, r.ptr(), false)?;
        self.linear_dw(h_student.ptr(), r.ptr(), n, ds, dt, a.d_map.ptr())?;
        self.linear_dx(r.ptr(), a.map.ptr(), n, ds, dt, d_h.ptr(), true)?;
        Ok(loss)
    }

    /// The anchor's map gradient accumulated so far (`d_t × d_s`), on the host.
    pub fn anchor_map_grad(&self, a: &DeviceAnchor) -> Result<Vec<f32>, EngineError> {
        Ok(self.gpu.read(&a.d_map, a.d_map.len())?)
    }

    /// The student's stream after layer `l` where the forward left it.
    pub fn residual_on_device<'a>(&self, a: &'a DeviceActs, l: usize) -> Result<&'a GpuBuffer<f32>, EngineError> {
        a.residuals.get(l).ok_or_else(|| EngineError::Invalid(format!("no layer {l} in the student")))
    }
}
