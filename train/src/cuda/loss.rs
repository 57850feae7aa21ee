//! The fused output head and distillation loss on the GPU: `crate::engine::head_loss` with
//! the same two passes over vocabulary chunks (statistics, then the gradient in place and two
//! GEMMs back into `d_hidden` and the head's gradient), never holding `n × n_vocab` logits.

use nexus_kernels::cuda::{GpuBuffer, LossRow, LOSS_ROW_BYTES};

use super::forward::DeviceActs;
use super::CudaStudent;
use crate::engine::head_loss::{check_head_loss, HeadLossLens, LossParts, LossWeights, IGNORE};
use crate::engine::EngineError;

impl CudaStudent {
    /// The loss of the batch `a` against `targets` (and, with `teacher_hidden` — the teacher's
    /// final normed hidden states, on the device — the teacher's distribution through the head
    /// set by [`CudaStudent::set_teacher_head`]). Adds
    /// `grad_scale·∂loss/∂head` into the head's gradient (the embedding's when tied) and
    /// returns `grad_scale·∂loss/∂hidden` for [`CudaStudent::backward`].
    pub fn head_loss(
        &self,
        a: &DeviceActs,
        targets: &[u32],
        teacher_hidden: Option<&GpuBuffer<f32>>,
        w: &LossWeights,
        chunk: usize,
        grad_scale: f32,
    ) -> Result<(LossParts, GpuBuffer<f32>), EngineError> {
        let (cfg, g) = (&self.cfg, &self.gpu);
        let (n, d) = (a.n_tokens(), cfg.n_embd);
        let teacher = match (teacher_hidden, &self.teacher_head) {
            (Some(h), Some((head, td))) => Some((h, head, *td)),
            (Some(_), None) => return Err(EngineError::Invalid("head_loss: teacher hidden states given but no teacher head set".into())),
            (None, _) => None,
        };
        let lens = HeadLossLens {
            hidden: n * d,
            head: cfg.n_vocab * d,
            n_embd: d,
            d_hidden: n * d,
            d_head: cfg.n_vocab * d,
            teacher: teacher.map(|(h, head, td)| (h.len(), head.len(), td)),
        };
        let d_hidden = g.alloc::<f32>(n * d)?;
        let Some((n_vocab, counted)) = check_head_loss(&lens, targets, w, chunk, grad_scale)? else {
            return Ok((LossParts { ce: 0.0, kl: 0.0, loss: 0.0, agree: 0, n: 0 }, d_hidden));
        };
        let (_, _, head_i) = self.ends();
        let (head, d_head) = (self.at(&self.params, head_i), self.at(&self.trainable()?.grads, head_i));
        let chunk = chunk.min(n_vocab);
        let temp = w.temperature;
        let ids: Vec<i32> = targets.iter().map(|&t| if t == IGNORE { -1 } else { t as i32 }).collect();
        let tgt = g.upload(&ids)?;
        let rows = g.alloc::<u8>(n * LOSS_ROW_BYTES)?;
        g.write_bytes(rows.ptr(), &LossRow::init_bytes(n))?;
        let zs = g.alloc::<f32>(n * chunk)?;
        let t_buf = teacher.map(|(h, head, td)| (h, head.ptr(), td));
        let zt = match &t_buf {
            Some(_) => Some(g.alloc::<f32>(n * chunk)?),
            None => None,
        };
        let zt_ptr = zt.as_ref().map_or(0, |b| b.ptr());
        let logits = |v0: usize, c: usize| -> Result<(), EngineError> {
            self.gemm(false, true, n, c, d, (a.hidden.ptr(), d), (head + (v0 * d * 4) as u64, d), (zs.ptr(), c), false)?;
            if let (Some((th, t_head, td)), Some(zt)) = (&t_buf, &zt) {
                let td = *td;
                self.gemm(false, true, n, c, td, (th.ptr(), td), (t_head + (v0 * td * 4) as u64, td), (zt.ptr(), c), false)?;
            }
            Ok(())
        };
        for v0 in (0..n_vocab).step_by(chunk) {
            let c = chunk.min(n_vocab - v0);
            logits(v0, c)?;
            g.tr_loss_stats(zs.ptr(), zt_ptr, tgt.ptr(), n, c, v0, 1.0 / temp, rows.ptr())?;
        }
        let coef = grad_scale / counted as f32;
        let (ce_w, kl_w) = (w.ce * coef, w.kl * temp * coef);
        for v0 in (0..n_vocab).step_by(chunk) {
            let c = chunk.min(n_vocab - v0);
            logits(v0, c)?;
            g.tr_loss_grad((zs.ptr(), zt_ptr, tgt.ptr()), (n, c, v0), temp, (ce_w, kl_w), rows.ptr())?;
            let head_c = head + (v0 * d * 4) as u64;
            self.gemm(false, false, n, d, c, (zs.ptr(), c), (head_c, d), (d_hidden.ptr(), d), true)?;
            self.gemm(true, false, c, d, n, (zs.ptr(), c), (a.hidden.ptr(), d), (d_head + (v0 * d * 4) as u64, d), true)?;
        }

        let stats = LossRow::parse(&g.read_bytes(rows.ptr(), n * LOSS_ROW_BYTES)?);
        let (mut ce, mut kl, mut agree) = (0f64, 0f64, 0usize);
        for (st, &t) in stats.iter().zip(targets) {
            if t == IGNORE {
                continue;
            }
            ce += st.lse() as f64 - st.z_target as f64;
            kl += st.kl;
            agree += usize::from(teacher.is_some() && st.s_arg == st.t_arg);
        }
        let (ce, kl) = (ce / counted as f64, kl / counted as f64);
        let loss = w.ce as f64 * ce + w.kl as f64 * (temp as f64).powi(2) * kl;
        Ok((LossParts { ce, kl, loss, agree, n: counted }, d_hidden))
    }
}
