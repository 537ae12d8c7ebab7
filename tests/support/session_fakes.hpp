#pragma once
// Fakes of a session actor's narrow dependencies (session_store_actor,
// model_client_actor, session_registry_actor) for deterministic tests under
// CAF's test coordinator. Each fake is a real typed actor implementing the
// interface; what it was asked and the answers it still owes live in a
// script object that the test reads and drives between scheduler runs
// (everything runs on the test's thread, so no locking). Held answers are
// released by a message to the fake (answer_atom, release_atom), so they
// are delivered from inside the actor, as CAF requires.
//
// The store is a miniature of PostgreSQL's rules, not a recorder: an
// activation bumps the epoch and returns the newest messages; a commit with
// an outdated epoch is fenced and writes nothing. Commits and model calls
// can be held, so a test decides when each answer arrives.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/llm_actor.hpp"
#include "actors/session_actor.hpp"
#include "actors/storage_actor.hpp"
#include "actors/vocabulary.hpp"

namespace parley::testing {

using answer_atom = caf::atom_constant<caf::atom("tanswer")>;
using release_atom = caf::atom_constant<caf::atom("trelease")>;

/// The fake store: a session store that also takes (release_atom), which
/// answers the oldest held commit.
using fake_store_actor = session_store_actor::extend<caf::reacts_to<release_atom>>;
/// The fake model: a model client that also takes (answer_atom, content),
/// which answers the oldest call.
using fake_model_actor = model_client_actor::extend<caf::reacts_to<answer_atom, std::string>>;

/// One session's rows, as PostgreSQL would keep them.
struct store_script {
  session_record session;
  std::vector<message_record> messages; ///< committed, ascending seq
  std::vector<std::string> calls;       ///< "activate", "adopt", "find_cmid", "commit"
  std::vector<std::int64_t> deleted;    ///< seqs of deleted responses
  /// Idempotency-Keys of the session's user that other sessions hold
  /// (response_keys): a keyed lookup reports them, a keyed commit is
  /// refused with key_taken.
  std::vector<std::string> keys_elsewhere;
  bool hold_commits = false;
  struct held_commit {
    turn_write write;
    caf::typed_response_promise<commit_outcome> rp;
  };
  std::deque<held_commit> commits; ///< held, oldest first

  /// The stored turn with this client id, as the store's lookup finds it.
  client_id_hit find(const std::string& cmid) const {
    client_id_hit hit;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (cmid.empty() || messages[i].role != "user" || messages[i].client_message_id != cmid)
        continue;
      hit.found = true;
      hit.user = messages[i];
      if (i + 1 < messages.size()) {
        hit.has_reply = true;
        hit.reply = messages[i + 1];
      }
    }
    return hit;
  }

  /// Another node activates the session: the epoch moves on.
  void bump_epoch() { ++session.epoch; }

  /// PostgreSQL's answer to a turn write at this moment.
  commit_outcome apply(const turn_write& w) {
    if (w.epoch != session.epoch || w.user.seq != session.last_seq + 1)
      return commit_outcome::fenced;
    // As the statement: a keyed turn claims its key among its user's.
    if (!w.user.request_hash.empty() && !w.user_id.empty() && w.user_id == session.user_id &&
        std::find(keys_elsewhere.begin(), keys_elsewhere.end(), w.user.client_message_id) !=
          keys_elsewhere.end())
      return commit_outcome::key_taken;
    messages.push_back(w.user);
    messages.push_back(w.reply);
    session.last_seq = w.reply.seq;
    session.message_count += 2;
    return commit_outcome::committed;
  }

  /// Answers the oldest held commit as PostgreSQL would now (inside the
  /// fake: send it release_atom).
  void release_commit() {
    auto c = std::move(commits.front());
    commits.pop_front();
    c.rp.deliver(apply(c.write));
  }
};

inline fake_store_actor::behavior_type
fake_store(fake_store_actor::pointer self, std::shared_ptr<store_script> sc) {
  return {
    [sc](release_atom) { sc->release_commit(); },
    [sc](activate_atom, const std::string&, std::int32_t window) {
      sc->calls.push_back("activate");
      sc->bump_epoch();
      activation_record a;
      a.session = sc->session;
      auto n = std::min<std::size_t>(sc->messages.size(), static_cast<std::size_t>(window));
      a.window.assign(sc->messages.end() - static_cast<std::ptrdiff_t>(n), sc->messages.end());
      return a;
    },
    [sc](adopt_atom, const adopt_request& r) -> std::int64_t {
      sc->calls.push_back("adopt");
      if (r.epoch != sc->session.epoch || r.last_seq != sc->session.last_seq)
        return 0;
      sc->bump_epoch();
      return sc->session.epoch;
    },
    [sc](find_cmid_atom, const std::string&, const std::string& cmid, std::int64_t live_seq,
         const std::string& user) {
      sc->calls.push_back("find_cmid");
      client_id_hit hit = sc->find(cmid);
      hit.gone = std::find(sc->deleted.begin(), sc->deleted.end(), live_seq) != sc->deleted.end();
      if (!user.empty() && std::find(sc->keys_elsewhere.begin(), sc->keys_elsewhere.end(),
                                     cmid) != sc->keys_elsewhere.end())
        hit.key_owner = "another-session";
      return hit;
    },
    [sc](append_atom, const append_write& w) {
      sc->calls.push_back("append");
      if (w.epoch != sc->session.epoch || w.after_seq != sc->session.last_seq)
        return commit_outcome::fenced;
      for (auto& m : w.messages)
        sc->messages.push_back(m);
      sc->session.last_seq += static_cast<std::int64_t>(w.messages.size());
      sc->session.message_count += static_cast<std::int64_t>(w.messages.size());
      return commit_outcome::committed;
    },
    [self, sc](turn_write& w) -> caf::result<commit_outcome> {
      sc->calls.push_back("commit");
      if (!sc->hold_commits)
        return sc->apply(w);
      auto rp = self->make_response_promise<commit_outcome>();
      sc->commits.push_back({std::move(w), rp});
      return rp;
    },
  };
}

/// The model: every call is held until the test answers it.
struct model_script {
  struct call {
    llm_request request;
    caf::actor listener; ///< streamed calls: where the pieces go
    caf::typed_response_promise<llm_result> rp;
  };
  std::deque<call> calls; ///< unanswered, oldest first
  std::size_t started = 0;
  std::size_t cancels = 0;

  /// Answers the oldest call with `content` (inside the fake: send it
  /// answer_atom).
  void answer(const std::string& content) {
    auto c = std::move(calls.front());
    calls.pop_front();
    // Usage as an upstream reports it; the session keeps it on the reply.
    c.rp.deliver(llm_result{content, "fake-model", token_usage{7, 3, 10, true}});
  }
};

inline fake_model_actor::behavior_type
fake_model(fake_model_actor::pointer self, std::shared_ptr<model_script> sc) {
  return {
    [sc](answer_atom, const std::string& content) { sc->answer(content); },
    [self, sc](llm_call_atom, llm_request& r) -> caf::result<llm_result> {
      ++sc->started;
      auto rp = self->make_response_promise<llm_result>();
      sc->calls.push_back({std::move(r), caf::actor{}, rp});
      return rp;
    },
    [self, sc](llm_call_atom, llm_request& r, caf::actor& listener) -> caf::result<llm_result> {
      ++sc->started;
      auto rp = self->make_response_promise<llm_result>();
      sc->calls.push_back({std::move(r), std::move(listener), rp});
      return rp;
    },
    [sc](cancel_atom) { ++sc->cancels; },
  };
}

/// What a session told its registry.
struct registry_script {
  std::vector<std::uint64_t> idle; ///< turn counts of passivation requests
  std::vector<std::string> moved;  ///< ids of sessions that moved away
  std::vector<std::string> stale;  ///< ids of sessions whose actor went stale
};

inline session_registry_actor::behavior_type
fake_registry(session_registry_actor::pointer, std::shared_ptr<registry_script> sc) {
  return {
    [sc](idle_atom, const std::string&, std::uint64_t received) { sc->idle.push_back(received); },
    [sc](moved_atom, const std::string& id, const caf::actor&) { sc->moved.push_back(id); },
    [sc](stale_atom, const std::string& id) { sc->stale.push_back(id); },
  };
}

} // namespace parley::testing
