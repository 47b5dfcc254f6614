//! Loading a policy set (docs/architecture.md §3): read every file, parse each separately so that
//! problems carry `file:line`, check our annotations, validate strictly against the schema, close
//! the address lists and compute the version. Any problem refuses the whole set: a partly loaded
//! set could drop a `forbid`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{EntityUid, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};

use super::context;
use super::diag::{line_of, located};
use super::entities::{StaticEntities, is_canonical_address};
use super::meta::PolicyMeta;
use super::names::Names;
use super::scopes::{ScopeDef, parse_scopes};
use super::slice::{self, SliceCache, SliceIndex};
use super::version::{sha256_hex, version_of};
use super::{DEFAULT_DENY_ID, Effect, LoadedPolicies, PolicyPaths, SCOPE_NOT_APPROVED_ID};
use crate::decode::Registry;
use crate::error::{Error, Result};

/// Files of the set, read but not yet parsed.
struct Sources {
    /// Every file the version covers: (relative path, bytes), sorted by path.
    files: Vec<(String, Vec<u8>)>,
    policies: Vec<(String, String)>,
    entities: Vec<(String, String)>,
    scopes: Option<(String, String)>,
    schema: Option<(String, String)>,
    tokens: Option<String>,
    abis: Vec<(String, String)>,
}

/// `*.ext` files directly in `dir`, sorted by name; `None` when `dir` does not exist.
fn list(
    dir: &Path,
    ext: &str,
    problems: &mut Vec<String>,
    shown: &str,
) -> Option<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            problems.push(format!("{shown}: cannot list: {e}"));
            return Some(Vec::new());
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let is_file = entry
                    .file_type()
                    .map(|t| t.is_file() || t.is_symlink())
                    .unwrap_or(false);
                if is_file && path.extension().and_then(|e| e.to_str()) == Some(ext) {
                    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                        out.push((name.to_owned(), path));
                    } else {
                        problems.push(format!(
                            "{shown}: file name {} is not UTF-8",
                            path.display()
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{shown}: cannot list: {e}")),
        }
    }
    out.sort();
    Some(out)
}

fn read_text(
    path: &Path,
    rel: &str,
    files: &mut Vec<(String, Vec<u8>)>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes.clone());
            files.push((rel.to_owned(), bytes));
            match text {
                Ok(t) => Some(t),
                Err(_) => {
                    problems.push(format!("{rel}: not UTF-8"));
                    None
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(format!("{rel}: cannot read: {e}"));
            None
        }
    }
}

fn read_sources(paths: &PolicyPaths, problems: &mut Vec<String>) -> Sources {
    let mut files = Vec::new();
    let mut policies = Vec::new();
    match list(&paths.policies, "cedar", problems, "policies") {
        None => problems.push(format!(
            "policies: directory {} not found",
            paths.policies.display()
        )),
        Some(list) => {
            if list.is_empty() {
                problems.push("policies: no .cedar files".to_owned());
            }
            for (name, path) in list {
                let rel = format!("policies/{name}");
                if let Some(t) = read_text(&path, &rel, &mut files, problems) {
                    policies.push((rel, t));
                }
            }
        }
    }
    let mut entities = Vec::new();
    for (name, path) in list(
        &paths.policies.join("entities"),
        "json",
        problems,
        "policies/entities",
    )
    .unwrap_or_default()
    {
        let rel = format!("policies/entities/{name}");
        if let Some(t) = read_text(&path, &rel, &mut files, problems) {
            entities.push((rel, t));
        }
    }
    let scopes_rel = "policies/scopes.json";
    let scopes = read_text(
        &paths.policies.join("scopes.json"),
        scopes_rel,
        &mut files,
        problems,
    )
    .map(|t| (scopes_rel.to_owned(), t));
    if scopes.is_none() && !problems.iter().any(|p| p.starts_with(scopes_rel)) {
        problems.push(format!(
            "{scopes_rel}: missing (it must declare at least the required scope \"basic\")"
        ));
    }
    let schema_rel = "schemas/parapet.cedarschema";
    let schema = read_text(
        &paths.schemas.join("parapet.cedarschema"),
        schema_rel,
        &mut files,
        problems,
    )
    .map(|t| (schema_rel.to_owned(), t));
    if schema.is_none() && !problems.iter().any(|p| p.starts_with(schema_rel)) {
        problems.push(format!("{schema_rel}: missing"));
    }
    let tokens = read_text(
        &paths.schemas.join("tokens.json"),
        "schemas/tokens.json",
        &mut files,
        problems,
    );
    // Required: without the registry every token is unknown, and limits written for known
    // tokens would silently stop applying.
    if tokens.is_none()
        && !problems
            .iter()
            .any(|p| p.starts_with("schemas/tokens.json"))
    {
        problems.push("schemas/tokens.json: missing (an empty registry is `{}`)".to_owned());
    }
    let mut abis = Vec::new();
    for (name, path) in list(
        &paths.schemas.join("abis"),
        "json",
        problems,
        "schemas/abis",
    )
    .unwrap_or_default()
    {
        let rel = format!("schemas/abis/{name}");
        if let Some(t) = read_text(&path, &rel, &mut files, problems) {
            abis.push((name, t));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Sources {
        files,
        policies,
        entities,
        scopes,
        schema,
        tokens,
        abis,
    }
}

fn parse_schema(rel: &str, text: &str, problems: &mut Vec<String>) -> Option<Schema> {
    match Schema::from_cedarschema_str(text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                tracing::warn!(file = rel, "schema: {w}");
            }
            Some(schema)
        }
        Err(e) => {
            let (msg, at) = located(&e);
            problems.push(format!(
                "{rel}:{}: {msg}",
                at.map_or(1, |o| line_of(text, o))
            ));
            None
        }
    }
}

fn valid_policy_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// Numeric suffix of Cedar's default ids (`policy0`, `policy1`, …): their order in the file.
fn default_id_order(id: &PolicyId) -> usize {
    let id: &str = id.as_ref();
    id.strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

struct FileCtx<'a> {
    rel: &'a str,
    text: &'a str,
    scopes: Option<&'a BTreeMap<String, ScopeDef>>,
    names: &'a Names,
}

/// Parses one file and checks each policy's annotations and literals.
fn parse_policy_file(cx: &FileCtx<'_>, problems: &mut Vec<String>) -> Vec<PolicyMeta> {
    let (rel, text) = (cx.rel, cx.text);
    let set = match PolicySet::from_str(text) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs.iter() {
                let (msg, at) = located(e);
                problems.push(format!(
                    "{rel}:{}: {msg}",
                    at.map_or(1, |o| line_of(text, o))
                ));
            }
            return Vec::new();
        }
    };
    let mut cursor = 0usize;
    let mut locate = |snippet: &str| -> usize {
        match text.get(cursor..).and_then(|rest| rest.find(snippet)) {
            Some(o) => {
                cursor += o + snippet.len();
                line_of(text, cursor - snippet.len())
            }
            None => 1,
        }
    };
    let mut items: Vec<(usize, Option<&Policy>, Option<String>)> = set
        .policies()
        .map(|p| (default_id_order(p.id()), Some(p), None))
        .chain(
            set.templates()
                .map(|t| (default_id_order(t.id()), None, Some(t.to_cedar()))),
        )
        .collect();
    items.sort_by_key(|i| i.0);
    let mut out = Vec::new();
    for (_, policy, template_text) in items {
        let Some(policy) = policy else {
            let line = locate(template_text.as_deref().unwrap_or_default());
            problems.push(format!(
                "{rel}:{line}: templates (policies with ?principal or ?resource) are not supported"
            ));
            continue;
        };
        let ptext = policy.to_cedar().unwrap_or_default();
        let line = locate(&ptext);
        if let Some(meta) = check_policy(cx, policy, ptext, line, problems) {
            out.push(meta);
        }
    }
    out
}

fn check_policy(
    cx: &FileCtx<'_>,
    policy: &Policy,
    text: String,
    line: usize,
    problems: &mut Vec<String>,
) -> Option<PolicyMeta> {
    let at = format!("{}:{line}", cx.rel);
    let before = problems.len();
    let effect = match policy.effect() {
        cedar_policy::Effect::Permit => Effect::Permit,
        cedar_policy::Effect::Forbid => Effect::Forbid,
    };
    let (mut id, mut reason, mut scope, mut step_up) = (None, None, None, false);
    for (key, value) in policy.annotations() {
        match key {
            "id" => id = Some(value.to_owned()),
            "reason" => reason = Some(value.to_owned()),
            "scope" if effect == Effect::Permit => scope = Some(value.to_owned()),
            "scope" => problems.push(format!(
                "{at}: @scope applies to permits only (forbids apply in every scope)"
            )),
            "step_up" if effect == Effect::Forbid => {
                if value.is_empty() || value == "true" {
                    step_up = true;
                } else {
                    problems.push(format!("{at}: @step_up takes no value"));
                }
            }
            "step_up" => problems.push(format!("{at}: @step_up applies to forbids only")),
            other => problems.push(format!(
                "{at}: unknown annotation @{other} (known: @id, @reason, @scope, @step_up)"
            )),
        }
    }
    let id = match id {
        None => {
            problems.push(format!("{at}: missing @id(\"…\")"));
            String::new()
        }
        Some(id) if id == DEFAULT_DENY_ID || id == SCOPE_NOT_APPROVED_ID => {
            problems.push(format!(
                "{at}: @id({id:?}) is reserved for the gateway's own answers"
            ));
            id
        }
        Some(id) if !valid_policy_id(&id) => {
            problems.push(format!(
                "{at}: @id({id:?}): use 1–128 letters, digits, '_', '.', ':' or '-'"
            ));
            id
        }
        Some(id) => id,
    };
    let reason = match reason {
        Some(r) if !r.trim().is_empty() => r,
        _ => {
            problems.push(format!(
                "{at}: missing @reason(\"…\") (it is what callers and auditors are told)"
            ));
            String::new()
        }
    };
    if let (Some(s), Some(scopes)) = (&scope, cx.scopes)
        && !scopes.contains_key(s)
    {
        problems.push(format!(
            "{at}: @scope({s:?}) is not declared in policies/scopes.json"
        ));
    }
    for lit in policy.entity_literals() {
        let ty = lit.type_name();
        if (ty == &cx.names.address || ty == &cx.names.wallet)
            && !is_canonical_address(lit.id().unescaped())
        {
            problems.push(format!(
                "{at}: {lit} can never match: addresses are written 0x followed by 40 lower-case hex digits"
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(PolicyMeta {
        policy: policy.new_id(PolicyId::new(&id)),
        id,
        effect,
        reason,
        scope,
        step_up,
        file: cx.rel.to_owned(),
        line,
        text,
    })
}

/// The validator reports a mistake once per action the policy applies to; the action adds
/// nothing for the author, so it is dropped and the copies collapse into one entry.
fn without_action(msg: &str) -> String {
    const MARK: &str = " for Parapet::Action::\"";
    match msg.find(MARK) {
        Some(start) => {
            let rest_at = start + MARK.len();
            match msg.get(rest_at..).and_then(|rest| rest.find('"')) {
                Some(end) => format!(
                    "{}{}",
                    msg.get(..start).unwrap_or_default(),
                    msg.get(rest_at + end + 1..).unwrap_or_default()
                ),
                None => msg.to_owned(),
            }
        }
        None => msg.to_owned(),
    }
}

/// Strict validation; warnings (a policy that can never apply, confusable identifiers) are
/// refused too, because a forbid that silently never applies fails open.
fn validate(
    schema: &Schema,
    metas: &[PolicyMeta],
    texts: &HashMap<&str, &str>,
    problems: &mut Vec<String>,
) {
    let mut set = PolicySet::new();
    for m in metas {
        if let Err(e) = set.add(m.policy.clone()) {
            problems.push(format!("{}:{}: {e}", m.file, m.line));
        }
    }
    let by_id: HashMap<&str, &PolicyMeta> = metas.iter().map(|m| (m.id.as_str(), m)).collect();
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let mut report = |pid: &PolicyId, msg: String, at: Option<usize>, warning: bool| {
        let pid_str: &str = pid.as_ref();
        let (file, line) = match by_id.get(pid_str) {
            Some(m) => {
                let text = texts.get(m.file.as_str()).copied().unwrap_or_default();
                (m.file.as_str(), at.map_or(m.line, |o| line_of(text, o)))
            }
            None => ("policies", 1),
        };
        let kind = if warning { "warning (refused): " } else { "" };
        let entry = format!(
            "{file}:{line}: {kind}policy {pid}: {}",
            without_action(&msg)
        );
        if !problems.contains(&entry) {
            problems.push(entry);
        }
    };
    for e in result.validation_errors() {
        let (msg, at) = located(e);
        report(e.policy_id(), msg, at, false);
    }
    for w in result.validation_warnings() {
        let (msg, at) = located(w);
        report(w.policy_id(), msg, at, true);
    }
}

pub(crate) fn load(paths: &PolicyPaths) -> Result<LoadedPolicies> {
    let mut problems = Vec::new();
    let src = read_sources(paths, &mut problems);
    if !problems.is_empty() {
        return Err(Error::PolicySetInvalid(problems));
    }
    let version = version_of(&src.files)?;
    let names = Names::new()?;

    let schema = src
        .schema
        .as_ref()
        .and_then(|(rel, t)| parse_schema(rel, t, &mut problems));
    let scopes = src
        .scopes
        .as_ref()
        .and_then(|(rel, t)| parse_scopes(rel, t, &mut problems));

    let mut metas: Vec<PolicyMeta> = Vec::new();
    let mut first_seen: HashMap<String, String> = HashMap::new();
    for (rel, text) in &src.policies {
        let cx = FileCtx {
            rel,
            text,
            scopes: scopes.as_ref(),
            names: &names,
        };
        for m in parse_policy_file(&cx, &mut problems) {
            let here = format!("{}:{}", m.file, m.line);
            if let Some(first) = first_seen.get(&m.id) {
                problems.push(format!(
                    "{here}: duplicate @id({:?}), first used at {first}",
                    m.id
                ));
                continue;
            }
            first_seen.insert(m.id.clone(), here);
            metas.push(m);
        }
    }
    let texts: HashMap<&str, &str> = src
        .policies
        .iter()
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();

    let mut statics = None;
    if let Some(schema) = &schema {
        if problems.is_empty() {
            validate(schema, &metas, &texts, &mut problems);
        }
        let literals: Vec<EntityUid> = metas
            .iter()
            .flat_map(|m| m.policy.entity_literals())
            .collect();
        statics = StaticEntities::load(schema, &names, &src.entities, &literals, &mut problems);
        if let Some(st) = &statics {
            for m in &metas {
                for lit in m.policy.entity_literals() {
                    if lit.type_name() == &names.address_list
                        && !st.declares_list(lit.id().unescaped())
                    {
                        problems.push(format!(
                            "{}:{}: {lit} is not declared in policies/entities/ (a misspelt list would silently be empty)",
                            m.file, m.line
                        ));
                    }
                }
            }
        }
    }

    let registry = match Registry::load(src.tokens.as_deref().unwrap_or("{}"), &src.abis) {
        Ok(r) => Some(r),
        Err(e) => {
            problems.push(format!("schemas (tokens.json, abis/): {e}"));
            None
        }
    };

    match (problems.is_empty(), schema, scopes, statics, registry) {
        (true, Some(schema), Some(scopes), Some(statics), Some(registry)) => {
            let actions = schema
                .action_entities()
                .map_err(|e| Error::Internal(format!("schema actions: {e}")))?;
            let mut profiles = Vec::with_capacity(metas.len());
            for m in &metas {
                profiles.push(slice::Profile {
                    target: slice::target(&m.policy, &names),
                    actions: slice::action_mask(&m.policy, &names, &actions)?,
                    requires: slice::required_context(&m.policy)
                        .iter()
                        .fold(0, |bits, a| bits | context::attribute_bit(a)),
                });
            }
            let index = SliceIndex::new(profiles);
            let meta_by_id = metas
                .iter()
                .enumerate()
                .map(|(i, m)| (m.id.clone(), i))
                .collect();
            tracing::debug!(
                policy_version = %version,
                policies = metas.len(),
                addresses = statics.address_count(),
                "policy set loaded"
            );
            Ok(LoadedPolicies {
                version,
                registry,
                files: src.files,
                schema,
                metas,
                meta_by_id,
                scopes,
                index,
                slices: SliceCache::default(),
                statics,
                stores: super::entities::StoreCache::default(),
                names,
                authorizer: cedar_policy::Authorizer::new(),
            })
        }
        _ => {
            if problems.is_empty() {
                problems.push("policy set could not be loaded".to_owned());
            }
            Err(Error::PolicySetInvalid(problems))
        }
    }
}

/// See [`LoadedPolicies::consent_hash`]: for each scope offered to the app (by id), its id,
/// its required flag and the text of its permits that can apply to the app (by `@id`), as
/// RFC 8785 JSON, SHA-256 in hex. Names and descriptions are left out on purpose.
pub(crate) fn consent_hash(set: &LoadedPolicies, app: &str, groups: &[String]) -> Result<String> {
    let mut entries = Vec::new();
    for (id, def) in set.offered_scopes_to(app, groups) {
        let mut permits: Vec<(&str, &str)> = set
            .metas
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                m.effective_scope() == Some(id) && set.index.may_apply_to(*i, app, groups)
            })
            .map(|(_, m)| (m.id.as_str(), m.text.as_str()))
            .collect();
        permits.sort_unstable();
        entries.push(serde_json::json!({
            "id": id,
            "required": def.required,
            "permits": permits
                .iter()
                .map(|(pid, text)| serde_json::json!({"id": pid, "text": text}))
                .collect::<Vec<_>>(),
        }));
    }
    let canonical = serde_json_canonicalizer::to_vec(&entries)
        .map_err(|e| Error::Internal(format!("consent hash: {e}")))?;
    Ok(sha256_hex(&canonical))
}
