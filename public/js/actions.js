// What the chat screen's controls do. Each action checks what it can against the current state, talks to the
// server when it must (awaiting its answer, so a refusal can be shown where the user acted), and hands the
// outcome to the domain as an event (transition.js). Page-only state (the open chat, the drawer, notices)
// is the wiring's `ui` object.
import { requestProblem } from './friendship.js';
import { envelopeTextBytes, maxTextBytes } from './envelope.js';
import { inviteLink } from './invite.js';
import { inviteProof, newInviteSecret } from './inviteproof.js';
import { isLive } from './model.js';
import { nicknameProblem } from './names.js';
import { enableNotifications } from './notify.js';
import { saveSettings } from './storage.js';
import { noticeText, requestError, requestProblemText } from './text.js';
import { canSendTo } from './trust.js';
import { confirmDialog } from './view/dom.js';
import { newGroupDialog } from './view/groups.js';

/**
 * @param {object} app  the wiring (app.js): `model` (current domain state), `ui`, `transport`, `views`,
 *   dispatch(event), changed(), render(), addNotice(notice, action?), startNewSession()
 */
export function createChatActions(app) {
  const { ui } = app;
  const publicKey = () => ui.identity.publicArmored;

  const actions = {
    // The link shown: the newest secret, which was never handed out (friendship.js inviteLinkTaken).
    inviteLink: () => inviteLink(location, app.model.session.id, ui.identity.fingerprint, app.model.inviteSecrets.at(-1)),
    /** Hands out the link shown (copy, share, QR code): it is for one friend, so the next one gets a new secret. */
    takeInviteLink() {
      const secret = app.model.inviteSecrets.at(-1);
      if (!app.model.session.id || !secret) return '';
      const link = actions.inviteLink();
      app.dispatch({ type: 'inviteLinkTaken', secret, fresh: newInviteSecret() });
      return link;
    },
    redraw: () => app.changed(),

    async addFriend(text) {
      const { problem, id } = requestProblem(app.model, text);
      if (problem) throw new Error(requestProblemText(problem, id));
      let unsure = false;
      const frame = { type: 'FRIEND_REQUEST', to: id, public_key: publicKey() };
      // We opened this ID's invite link: prove it (inviteproof.js), so they see the request came through it.
      const secret = app.model.inviteKeys.get(id);
      const inviterFingerprint = app.model.expectations.get(id);
      if (secret && inviterFingerprint) frame.invite = await inviteProof(secret, ui.identity.fingerprint, inviterFingerprint);
      try {
        await app.transport.request(frame);
      } catch (error) {
        // Dropped before the ACK: the request may have arrived (friendship.js requestSent).
        if (error.code !== 'connection_lost') throw requestError(error);
        unsure = true;
      }
      app.dispatch({ type: 'requestSent', id, unsure });
    },

    /** The invite step's button; a refusal is thrown for the step to show, where the user clicked. */
    async useInvite() {
      const invite = ui.invite;
      if (!invite) return;
      await actions.addFriend(invite.id);
      app.views.sidebar.prefillAdd('');
      actions.dismissInvite();
    },

    /** The skip link: the open chat's composer, else the start screen's first action (view/chat.js focusMain). */
    focusMain() {
      app.views.chat.focusMain(ui.activeFriendId);
    },

    /** "Add a friend by ID" on the start screen: the form is in the side panel (the drawer on a phone). */
    focusAddFriend() {
      const toggle = document.querySelector('.drawer-toggle');
      if (toggle && toggle.offsetParent !== null) app.setDrawer(true); // only where the panel is a drawer
      app.views.sidebar.focusAdd();
    },

    setNickname(id, typed) {
      const { problem, nickname, other } = nicknameProblem(app.model, id, typed);
      if (problem === 'taken') throw new Error(`You already call ${other} "${nickname}".`);
      app.dispatch({ type: 'nicknameSet', id, nickname });
    },

    dismissInvite() {
      ui.invite = null;
      history.replaceState(null, '', `${location.pathname}${location.search}`);
      app.changed();
    },

    async acceptRequest(id) {
      const request = app.model.incomingRequests.get(id);
      if (!request || !request.fingerprint) return;
      try {
        await app.transport.request({ type: 'FRIEND_ACCEPT', to: id, public_key: publicKey() });
      } catch (error) {
        if (error.code === 'no_pending_request') app.dispatch({ type: 'requestClosed', id });
        throw requestError(error);
      }
      const { fingerprint, userId, publicArmored, viaInvite } = request;
      app.dispatch({ type: 'requestAccepted', id, key: { fingerprint, userId, publicArmored }, viaInvite });
      actions.selectFriend(id);
    },

    async declineRequest(id) {
      try {
        await app.transport.request({ type: 'FRIEND_DECLINE', to: id });
      } catch (error) {
        if (error.code !== 'no_pending_request') throw requestError(error);
      }
      app.dispatch({ type: 'requestClosed', id });
    },

    dismissSent(id) {
      app.dispatch({ type: 'sentRequestDismissed', id });
    },

    async removeFriend(id) {
      if (!isLive(app.model.friends.get(id))) return;
      const ok = await confirmDialog({
        title: `Remove ${id}?`,
        body: 'The friendship ends for both of you. To chat again, one of you has to send a new request.',
        confirmText: 'Remove friend',
        danger: true,
      });
      if (!ok) return;
      // A contact reached only by handle has no friendship on the server to end: it leaves the book here.
      if (app.model.friends.get(id).idLive) try {
        await app.transport.request({ type: 'FRIEND_REMOVE', to: id });
      } catch (error) {
        if (error.code !== 'not_friends') {
          app.addNotice(noticeText('remove_failed', { id, message: requestError(error).message }));
          return;
        }
      }
      app.dispatch({ type: 'friendRemoved', id });
    },

    dismissFriend(id) {
      app.dispatch({ type: 'chatClosed', id });
      ui.unread.delete(id);
      if (ui.activeFriendId === id) ui.activeFriendId = null;
      app.changed();
    },

    selectFriend(id) {
      if (!app.model.friends.has(id)) return;
      ui.activeFriendId = id;
      ui.activeGroupId = null;
      ui.unread.delete(id);
      ui.drawerOpen = false;
      ui.notices = ui.notices.filter((n) => n.kind !== `flag-${id}`);
      app.render();
      app.views.chat.focusComposer(id);
    },

    sendMessage(id, text) {
      const friend = app.model.friends.get(id);
      if (!friend || !canSendTo(friend)) return false;
      if (envelopeTextBytes(text) > maxTextBytes(app.model.session.limits.max_message_bytes)) return false;
      app.dispatch({ type: 'messageWritten', id, text });
      return true;
    },

    retryMessage(id, localId) {
      app.dispatch({ type: 'messageRetried', id, localId });
    },

    revealMessage(id, localId) {
      app.dispatch({ type: 'messageRevealed', id, localId });
    },

    markVerified(id) {
      app.dispatch({ type: 'keyVerified', id });
    },

    markUnverified(id) {
      app.dispatch({ type: 'keyUnverified', id });
    },

    acceptChangedKey(id) {
      app.dispatch({ type: 'changedKeyAccepted', id });
    },

    async setNotifications(on) {
      ui.notifications = on ? await enableNotifications() : false;
      if (on && !ui.notifications) app.addNotice(noticeText('notifications_blocked'));
      if (ui.remember) saveSettings({ notifications: ui.notifications });
      app.changed();
    },

    async leave() {
      const ok = await confirmDialog({
        title: 'Leave SecChat?',
        body: 'Your ID ends now and your friends are told you left. Your key stays usable; a new session gets a new ID.',
        confirmText: 'Leave',
        danger: true,
      });
      if (!ok) return;
      await app.transport.leave();
      app.dispatch({ type: 'left' });
      app.addNotice(noticeText('left'), { label: 'Start a new session', run: app.startNewSession });
    },

    dismissNotice(noticeId) {
      ui.notices = ui.notices.filter((n) => n.id !== noticeId);
      app.changed();
    },

    /** Downloads the contact book, encrypted to and signed by the user's key (contactstore.js). */
    async exportBook() {
      const armored = await app.contactStore.exportText();
      const url = URL.createObjectURL(new Blob([armored], { type: 'application/pgp-encrypted' }));
      const link = document.createElement('a');
      link.href = url;
      link.download = 'secchat-contacts.asc';
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    },

    importBook: (armored) => app.contactStore.importText(armored),

    // --- groups (groupsync.js); each throws its refusal for the view to show where the user acted ---
    openNewGroup() {
      return newGroupDialog(app.model, async (choice) => {
        const gid = await app.groupSync.create(choice);
        actions.selectGroup(gid);
      });
    },
    selectGroup(gid) {
      if (!app.model.groups.has(gid)) return;
      ui.activeGroupId = gid;
      ui.activeFriendId = null;
      ui.unread.delete(`group:${gid}`);
      ui.drawerOpen = false;
      app.render();
      app.views.chat.focusGroupComposer(gid);
    },
    sendGroupMessage(gid, text) {
      if (envelopeTextBytes(text) > maxTextBytes(app.model.session.limits.max_message_bytes) / 2) {
        return Promise.reject(new Error('This message is too long for a group.'));
      }
      return app.groupSync.write(gid, text);
    },
    addGroupMember: (gid, friendId) => app.groupSync.addMember(gid, friendId),
    removeGroupMember: (gid, fp) => app.groupSync.removeMember(gid, fp),
    replaceGroupMemberKey: (gid, fp, friendId) => app.groupSync.replaceKey(gid, fp, friendId),
    setGroupAdmin: (gid, fp, admin) => app.groupSync.setAdmin(gid, fp, admin),
    renameGroup: (gid, name) => app.groupSync.rename(gid, name),
    leaveGroup: (gid) => app.groupSync.leave(gid),
    async forgetGroup(gid) {
      await app.groupSync.forget(gid);
      if (ui.activeGroupId === gid) ui.activeGroupId = null;
      ui.unread.delete(`group:${gid}`);
      app.changed();
    },
    dismissGroupAlerts(gid) {
      app.dispatch({ type: 'groupAlertsDismissed', gid });
    },

    toggleDrawer(open) {
      app.setDrawer(typeof open === 'boolean' ? open : !ui.drawerOpen);
    },
  };
  return actions;
}
