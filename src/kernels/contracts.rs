//! The contracts between the Rust host and the WGSL kernels, checked instead of trusted to
//! comments: every uniform struct the launchers write has the byte layout of the WGSL struct of
//! the same name (naga's reflection of the module), and the codes the host passes (`ACT`,
//! `ACT_GRAD`, `LAYOUT`) and the loss accumulator's slots are the WGSL constants' values.

use crate::gpu::Shader;
use crate::kernels::reduce::LossSlots;
use crate::ops::{Act, Layout};

fn module(shader: &Shader) -> naga::Module {
    naga::front::wgsl::parse_str(shader.source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)))
}

/// The value of a WGSL `const NAME: u32 = …u;`.
fn const_u32(m: &naga::Module, name: &str) -> Option<u32> {
    let (_, c) = m
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))?;
    match m.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
        naga::Expression::Literal(naga::Literal::AbstractInt(v)) => u32::try_from(v).ok(),
        _ => None,
    }
}

#[test]
fn uniform_structs_have_the_wgsl_layout() {
    use super::*;
    let table: [(Shader, &[UniformLayout]); 16] = [
        (Shader::CONDITION, condition::UNIFORMS),
        (Shader::ADAM, adam::UNIFORMS),
        (Shader::SGD, sgd::UNIFORMS),
        (Shader::ADD, add::UNIFORMS),
        (Shader::CLIP_GRAD, clip_grad::UNIFORMS),
        (Shader::LIKELIHOOD, likelihood::UNIFORMS),
        (Shader::BIAS_ACT, bias_act::UNIFORMS),
        (Shader::CONV, conv::UNIFORMS),
        (Shader::GROUP_NORM, group_norm::UNIFORMS),
        (Shader::ATTENTION, attention::UNIFORMS),
        (Shader::GATHER, gather::UNIFORMS),
        (Shader::IWAE, iwae::UNIFORMS),
        (Shader::REDUCE, reduce::UNIFORMS),
        (Shader::REPARAM_KL, reparam_kl::UNIFORMS),
        (Shader::ADAM, step::UNIFORMS),
        (Shader::MATMUL, matmul::UNIFORMS),
    ];
    let mut checked = 0;
    for (shader, structs) in table {
        let m = module(&shader);
        for &(name, size, fields) in structs {
            let (members, span) = m
                .types
                .iter()
                .find_map(|(_, t)| match &t.inner {
                    naga::TypeInner::Struct { members, span }
                        if t.name.as_deref() == Some(name) =>
                    {
                        Some((members.clone(), *span))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{}: no WGSL struct {name}", shader.name));
            assert_eq!(
                span as usize, size,
                "{}: {name} is {span} bytes in WGSL, {size} in Rust",
                shader.name
            );
            // Every WGSL member that is not padding is a Rust field at the same offset.
            for mem in members.iter() {
                let mname = mem.name.clone().unwrap_or_default();
                if mname.starts_with('_') {
                    continue;
                }
                let rust = fields.iter().find(|(f, _)| *f == mname).unwrap_or_else(|| {
                    panic!(
                        "{}: {name}.{mname} has no Rust field of that name",
                        shader.name
                    )
                });
                assert_eq!(
                    mem.offset as usize, rust.1,
                    "{}: {name}.{mname} is at byte {} in WGSL, {} in Rust",
                    shader.name, mem.offset, rust.1
                );
                checked += 1;
            }
            assert_eq!(
                members
                    .iter()
                    .filter(|m| !m.name.as_deref().unwrap_or("_").starts_with('_'))
                    .count(),
                fields.len(),
                "{}: {name} has other fields in Rust and WGSL",
                shader.name
            );
        }
    }
    assert!(checked > 40, "{checked} fields checked");
}

#[test]
fn codes_and_slots_are_the_wgsl_constants() {
    let common = module(&Shader::BIAS_ACT);
    for (act, name) in [
        (Act::Identity, "ACT_IDENTITY"),
        (Act::Relu, "ACT_RELU"),
        (Act::Sigmoid, "ACT_SIGMOID"),
        (Act::Tanh, "ACT_TANH"),
    ] {
        assert_eq!(const_u32(&common, name), Some(act.code()), "{name}");
    }
    for (layout, name) in [
        (Layout::NN, "LAYOUT_NN"),
        (Layout::NT, "LAYOUT_NT"),
        (Layout::TN, "LAYOUT_TN"),
    ] {
        assert_eq!(const_u32(&common, name), Some(layout.code()), "{name}");
    }
    use crate::ops::Likelihood;
    assert_eq!(
        const_u32(&common, "LIKELIHOOD_NONE"),
        Some(crate::ops::likelihood::LIKELIHOOD_NONE)
    );
    for (lik, name) in [
        (Likelihood::Bernoulli, "LIKELIHOOD_BERNOULLI"),
        (
            Likelihood::ContinuousBernoulli,
            "LIKELIHOOD_CONTINUOUS_BERNOULLI",
        ),
        (Likelihood::Gaussian { sigma: None }, "LIKELIHOOD_GAUSSIAN"),
        (
            Likelihood::GaussianIdentity { sigma: None },
            "LIKELIHOOD_GAUSSIAN_IDENTITY",
        ),
        (Likelihood::Laplace { scale: None }, "LIKELIHOOD_LAPLACE"),
        (
            Likelihood::LaplaceIdentity { scale: None },
            "LIKELIHOOD_LAPLACE_IDENTITY",
        ),
    ] {
        assert_eq!(const_u32(&common, name), Some(lik.code()), "{name}");
    }
    let reduce = module(&Shader::REDUCE);
    // Every named slot is the WGSL constant SLOT_<NAME>.
    for (name, slot) in LossSlots::NAMES {
        let wgsl = format!("SLOT_{}", name.to_uppercase());
        assert_eq!(const_u32(&reduce, &wgsl), Some(slot as u32), "{wgsl}");
    }
    // Every slot has its WGSL constant.
    let slots = reduce
        .constants
        .iter()
        .filter(|(_, c)| c.name.as_deref().is_some_and(|n| n.starts_with("SLOT_")))
        .count();
    assert_eq!(slots, LossSlots::LEN, "slots in reduce.wgsl");
}

/// The typed table of matmul entry points (`MatmulEntry`) is the modules' list: every entry point
/// of the three matmul modules is in it (the subgroup modules include `matmul.wgsl`'s kernels
/// too), and every entry of the table is an entry point of the module it names.
#[test]
fn matmul_entry_table_is_the_modules_entry_points() {
    use super::matmul::MatmulEntry;
    let entry_points = |shader: &Shader| -> Vec<String> {
        module(shader)
            .entry_points
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    for shader in [
        Shader::MATMUL,
        Shader::MATMUL_SUBGROUP,
        Shader::MATMUL_SUBGROUP_TEX,
    ] {
        for name in entry_points(&shader) {
            assert!(
                MatmulEntry::parse(&name).is_some(),
                "{}: {name} is not in MatmulEntry",
                shader.name
            );
        }
    }
    for e in MatmulEntry::ALL {
        assert!(
            entry_points(&e.shader()).contains(&e.name().to_string()),
            "{} is no entry point of {}",
            e.name(),
            e.shader().name
        );
        assert_eq!(MatmulEntry::parse(e.name()), Some(e));
    }
}
